//! The index snapshot: the in-memory digest index written to
//! `<store>/index.snapshot`, so that an open loads it with one sequential
//! read instead of inserting every digest of the log again (10M IDs: the
//! rebuild took 0.8–1.1 s of CPU on both cores). Only an optimisation: any
//! snapshot that does not validate is ignored with one log line, and the
//! index is rebuilt from the digest log as without one.
//!
//! It covers one prefix of the digest log, `start..end` (record numbers),
//! named by the store's creation time and the batch whose records end at
//! `end` (sequence, first record, count, checksum of its records). Records
//! of the log are never changed once committed — a repair at open rewrites
//! what the batch header's checksum says they were — and a prune only moves
//! `start`, so at open the snapshot holds exactly the digests of that prefix
//! when the log still starts at `start`, reaches `end`, and that batch is
//! still there with the same place and checksum — for a log with this
//! history. A restored backup or a diverged copy of the store can pass those
//! checks with other records before that batch, so once the log is checked
//! and mended the open also compares the loaded index's count and digest
//! fingerprint with the log's records `start..end` (`rebuild::load`), and
//! rebuilds on any difference. It is only ever written
//! from the index of a store whose commits are durable (under the writer
//! lock, after sled's flush), so it never covers a commit a crash can undo.
//!
//! Layout (little endian): `HEADER_LEN` bytes of header (magic, version,
//! shard count, what it covers, the length of the index bytes), the index
//! (`DigestIndex::write_to`), then the CRC32C of everything before it.
//! Written to a temporary file, fsynced, renamed over the old one, and the
//! directory fsynced: a crash leaves the old snapshot or the new one.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::index::DigestIndex;

/// The snapshot's file name inside the store directory.
pub(crate) const FILE: &str = "index.snapshot";
pub(crate) const TMP: &str = "index.snapshot.tmp";
const MAGIC: &[u8; 8] = b"TALLYIDX";
/// Bumped whenever the layout (of this file or of the index) changes.
pub(crate) const VERSION: u32 = 1;
/// Magic, version, shards, created_at, start, end, last batch (seq, first
/// record, checksum, count), index length, 8 reserved bytes.
const HEADER_LEN: usize = 8 + 4 + 4 + 8 + 8 * 4 + 8 + 4 + 8 + 8;
/// Bytes per buffered read or write (bounds the memory beside the index).
const IO_BUF: usize = 1 << 20;

/// The prefix of the digest log a snapshot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Covers {
    /// `meta` `created_at` of the store it was taken from.
    pub created_at_ms: i64,
    /// Digest log records `start..end`.
    pub start: u64,
    pub end: u64,
    /// The batch whose records end at `end`.
    pub last: LastBatch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LastBatch {
    pub seq: u64,
    pub first_record: u64,
    pub count: u32,
    pub checksum: u64,
}

pub(crate) fn path(store: &Path) -> PathBuf {
    store.join(FILE)
}

fn encode_header(c: &Covers, index_len: u64) -> [u8; HEADER_LEN] {
    let mut h = Vec::with_capacity(HEADER_LEN);
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&VERSION.to_le_bytes());
    h.extend_from_slice(&(DigestIndex::SHARDS as u32).to_le_bytes());
    h.extend_from_slice(&c.created_at_ms.to_le_bytes());
    for v in [c.start, c.end, c.last.seq, c.last.first_record] {
        h.extend_from_slice(&v.to_le_bytes());
    }
    h.extend_from_slice(&c.last.checksum.to_le_bytes());
    h.extend_from_slice(&c.last.count.to_le_bytes());
    h.extend_from_slice(&index_len.to_le_bytes());
    h.extend_from_slice(&[0u8; 8]); // reserved
    let mut out = [0u8; HEADER_LEN];
    out.copy_from_slice(&h);
    out
}

/// What the header says: what it covers and how many index bytes follow.
fn decode_header(h: &[u8; HEADER_LEN]) -> Result<(Covers, u64), String> {
    if &h[..8] != MAGIC {
        return Err("not an index snapshot (bad magic)".into());
    }
    let u32_at = |at: usize| u32::from_le_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&h[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let version = u32_at(8);
    if version != VERSION {
        return Err(format!(
            "written in layout version {version}, this build reads {VERSION}"
        ));
    }
    let shards = u32_at(12);
    if shards as usize != DigestIndex::SHARDS {
        return Err(format!(
            "has {shards} index shards, this build uses {}",
            DigestIndex::SHARDS
        ));
    }
    let covers = Covers {
        created_at_ms: u64_at(16) as i64,
        start: u64_at(24),
        end: u64_at(32),
        last: LastBatch {
            seq: u64_at(40),
            first_record: u64_at(48),
            checksum: u64_at(56),
            count: u32_at(64),
        },
    };
    // Checked sums: a damaged or hostile header must be a rejection, not
    // an overflow (a panic in a debug build, a wrapped "match" in release).
    if covers.start > covers.end
        || covers
            .last
            .first_record
            .checked_add(covers.last.count as u64)
            != Some(covers.end)
    {
        return Err(format!("inconsistent header {covers:?}"));
    }
    Ok((covers, u64_at(68)))
}

/// Feeds every byte passing through into a CRC32C.
struct Crc<T> {
    inner: T,
    crc: u32,
}

impl<W: Write> Write for Crc<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Crc<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        Ok(n)
    }
}

/// Write `index`, which holds exactly the digests `covers` names, as the
/// store's snapshot (atomically). Returns the file's size.
pub(crate) fn write(store: &Path, covers: &Covers, index: &DigestIndex) -> std::io::Result<u64> {
    let tmp = store.join(TMP);
    let result = write_tmp(&tmp, covers, index).and_then(|len| {
        std::fs::rename(&tmp, path(store))?;
        File::open(store)?.sync_all()?;
        Ok(len)
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn write_tmp(tmp: &Path, covers: &Covers, index: &DigestIndex) -> std::io::Result<u64> {
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(tmp)?;
    let index_len = index.serialized_len();
    let mut w = Crc {
        inner: BufWriter::with_capacity(IO_BUF, f),
        crc: 0,
    };
    w.write_all(&encode_header(covers, index_len))?;
    index.write_to(&mut w)?;
    let crc = w.crc;
    let mut f = w.inner.into_inner().map_err(|e| e.into_error())?;
    f.write_all(&crc.to_le_bytes())?;
    f.sync_all()?;
    Ok(HEADER_LEN as u64 + index_len + 4)
}

/// What reading the store's snapshot gave.
pub(crate) enum Outcome {
    /// There is none.
    Missing,
    /// There is one, not usable for this reason (the caller logs it).
    Rejected(String),
    Loaded(DigestIndex, Covers),
}

/// Read the store's snapshot. `check` says whether what its header covers
/// is still a prefix of the store's digest log (it is called before the
/// index is read, so a stale snapshot costs one header read).
pub(crate) fn read(store: &Path, check: impl FnOnce(&Covers) -> Result<(), String>) -> Outcome {
    // A write that never finished.
    let _ = std::fs::remove_file(store.join(TMP));
    let f = match File::open(path(store)) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Outcome::Missing,
        Err(e) => return Outcome::Rejected(format!("opening it failed: {e}")),
    };
    match read_file(f, check) {
        Ok((index, covers)) => Outcome::Loaded(index, covers),
        Err(why) => Outcome::Rejected(why),
    }
}

fn read_file(
    f: File,
    check: impl FnOnce(&Covers) -> Result<(), String>,
) -> Result<(DigestIndex, Covers), String> {
    let io = |e: std::io::Error| format!("reading it failed: {e}");
    let file_len = f.metadata().map_err(io)?.len();
    let mut r = Crc {
        inner: BufReader::with_capacity(IO_BUF, f),
        crc: 0,
    };
    let mut head = [0u8; HEADER_LEN];
    r.read_exact(&mut head)
        .map_err(|_| format!("shorter than its header ({file_len} bytes)"))?;
    let (covers, index_len) = decode_header(&head)?;
    let want_len = index_len.checked_add(HEADER_LEN as u64 + 4);
    if want_len != Some(file_len) {
        return Err(format!(
            "{file_len} bytes, its header says {} (truncated or overwritten)",
            want_len.map_or("more than 2^64".to_string(), |n| n.to_string())
        ));
    }
    check(&covers)?;
    let index = DigestIndex::read_from(&mut r, index_len)?;
    let crc = r.crc;
    let mut trailer = [0u8; 4];
    r.inner.read_exact(&mut trailer).map_err(io)?;
    if u32::from_le_bytes(trailer) != crc {
        return Err("its checksum does not match its bytes".into());
    }
    if index.serialized_len() != index_len {
        return Err("its index is not as long as its header says".into());
    }
    Ok((index, covers))
}

/// Delete the store's snapshot (it covers nothing worth keeping).
pub(crate) fn remove(store: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path(store)) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: u64) -> (DigestIndex, Covers) {
        let mut index = DigestIndex::default();
        for i in 0..n {
            index.insert(xxhash_rust::xxh3::xxh3_128(&i.to_le_bytes()));
        }
        index.insert(0);
        let covers = Covers {
            created_at_ms: 1_700_000_000_000,
            start: 10,
            end: 10 + n,
            last: LastBatch {
                seq: 7,
                first_record: 10 + n - 5,
                count: 5,
                checksum: 0xfeed,
            },
        };
        (index, covers)
    }

    fn load(dir: &Path) -> Result<(DigestIndex, Covers), String> {
        match read(dir, |_| Ok(())) {
            Outcome::Loaded(i, c) => Ok((i, c)),
            Outcome::Rejected(why) => Err(why),
            Outcome::Missing => Err("missing".into()),
        }
    }

    fn rejected(dir: &Path) -> String {
        match read(dir, |_| Ok(())) {
            Outcome::Rejected(why) => why,
            Outcome::Loaded(..) => panic!("loaded"),
            Outcome::Missing => panic!("missing"),
        }
    }

    #[test]
    fn round_trips_every_digest() {
        let dir = tempfile::tempdir().unwrap();
        let (index, covers) = sample(5_000);
        let len = write(dir.path(), &covers, &index).unwrap();
        assert_eq!(std::fs::metadata(path(dir.path())).unwrap().len(), len);
        assert!(!dir.path().join(TMP).exists());
        let (got, got_covers) = load(dir.path()).unwrap();
        assert_eq!(got_covers, covers);
        assert_eq!(got.len(), index.len());
        for i in 0..6_000u64 {
            let d = xxhash_rust::xxh3::xxh3_128(&i.to_le_bytes());
            assert_eq!(got.contains(d), i < 5_000, "{i}");
        }
        assert!(got.contains(0));
        // It stays a working table: inserts and removes after loading.
        let mut got = got;
        assert!(got.remove(xxhash_rust::xxh3::xxh3_128(&3u64.to_le_bytes())));
        assert!(got.insert(xxhash_rust::xxh3::xxh3_128(&5_001u64.to_le_bytes())));
    }

    #[test]
    fn an_empty_index_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let (_, covers) = sample(5);
        write(dir.path(), &covers, &DigestIndex::default()).unwrap();
        assert_eq!(load(dir.path()).unwrap().0.len(), 0);
    }

    #[test]
    fn rejects_a_changed_byte_anywhere() {
        let dir = tempfile::tempdir().unwrap();
        let (index, covers) = sample(2_000);
        write(dir.path(), &covers, &index).unwrap();
        let good = std::fs::read(path(dir.path())).unwrap();
        // In the header's covered range, a shard header, the tags, the bits, the trailer.
        let tags_at = HEADER_LEN + 25 + 3;
        for at in [30, HEADER_LEN + 3, tags_at, good.len() / 2, good.len() - 2] {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            std::fs::write(path(dir.path()), &bad).unwrap();
            assert!(load(dir.path()).is_err(), "byte {at} changed, still loaded");
        }
        std::fs::write(path(dir.path()), &good).unwrap();
        assert!(load(dir.path()).is_ok());
    }

    #[test]
    fn rejects_truncated_or_extended_files() {
        let dir = tempfile::tempdir().unwrap();
        let (index, covers) = sample(2_000);
        write(dir.path(), &covers, &index).unwrap();
        let good = std::fs::read(path(dir.path())).unwrap();
        for len in [0, 10, HEADER_LEN, HEADER_LEN + 30, good.len() - 1] {
            std::fs::write(path(dir.path()), &good[..len]).unwrap();
            let why = rejected(dir.path());
            assert!(why.contains("bytes"), "{len}: {why}");
        }
        let mut longer = good.clone();
        longer.push(0);
        std::fs::write(path(dir.path()), &longer).unwrap();
        assert!(load(dir.path()).is_err());
    }

    #[test]
    fn rejects_another_version_or_shard_count() {
        let dir = tempfile::tempdir().unwrap();
        let (index, covers) = sample(100);
        write(dir.path(), &covers, &index).unwrap();
        let good = std::fs::read(path(dir.path())).unwrap();
        let mut v2 = good.clone();
        v2[8..12].copy_from_slice(&(VERSION + 1).to_le_bytes());
        std::fs::write(path(dir.path()), &v2).unwrap();
        assert!(rejected(dir.path()).contains("layout version"));
        let mut shards = good.clone();
        shards[12..16].copy_from_slice(&32u32.to_le_bytes());
        std::fs::write(path(dir.path()), &shards).unwrap();
        assert!(rejected(dir.path()).contains("shards"));
        let mut magic = good;
        magic[0] = b'X';
        std::fs::write(path(dir.path()), &magic).unwrap();
        assert!(rejected(dir.path()).contains("magic"));
    }

    /// `bytes` with its trailer recomputed: what a hostile (or carelessly
    /// hand-edited) file looks like, past the CRC.
    fn with_crc(mut bytes: Vec<u8>) -> Vec<u8> {
        let n = bytes.len() - 4;
        let crc = crc32c::crc32c(&bytes[..n]);
        bytes[n..].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// Length and position fields near 2^64, with a valid CRC: rejected,
    /// not a panic on overflow, nor (a shard's cap + TAIL wrapping in a
    /// release build) a table whose home slots lie past its arrays.
    #[test]
    fn rejects_fields_that_overflow_with_a_valid_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let (index, covers) = sample(2_000);
        write(dir.path(), &covers, &index).unwrap();
        let good = std::fs::read(path(dir.path())).unwrap();
        let edits: [(usize, u64, &str); 2] = [
            // last.first_record: first_record + count overflows.
            (48, u64::MAX - 2, "inconsistent header"),
            // shard 0's cap: cap + TAIL wraps below its slot count.
            (HEADER_LEN, u64::MAX - 63, "slot count"),
        ];
        for (at, v, why) in edits {
            let mut bad = good.clone();
            bad[at..at + 8].copy_from_slice(&v.to_le_bytes());
            std::fs::write(path(dir.path()), with_crc(bad)).unwrap();
            let got = rejected(dir.path());
            assert!(got.contains(why), "field at {at}: {got}");
        }
        // An index length claiming ~2^64 bytes in a small file.
        let mut bad = good.clone();
        bad[68..76].copy_from_slice(&(u64::MAX - 10).to_le_bytes());
        std::fs::write(path(dir.path()), with_crc(bad)).unwrap();
        assert!(rejected(dir.path()).contains("bytes"));
        // A shard claiming 2^60 slots (~15 EB) in a small file: rejected
        // before anything that size is allocated.
        let mut bad = good;
        bad[HEADER_LEN + 17..HEADER_LEN + 25].copy_from_slice(&(1u64 << 60).to_le_bytes());
        std::fs::write(path(dir.path()), with_crc(bad)).unwrap();
        assert!(rejected(dir.path()).contains("more slots"));
    }

    #[test]
    fn the_check_sees_the_header_before_the_index_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let (index, covers) = sample(100);
        write(dir.path(), &covers, &index).unwrap();
        let mut seen = None;
        let r = read(dir.path(), |c| {
            seen = Some(*c);
            Err("the log was pruned since".into())
        });
        assert!(matches!(r, Outcome::Rejected(why) if why.contains("pruned")));
        assert_eq!(seen, Some(covers));
        assert!(matches!(
            read(&dir.path().join("nowhere"), |_| Ok(())),
            Outcome::Missing
        ));
    }

    #[test]
    fn an_unfinished_write_is_removed_and_the_old_snapshot_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (index, covers) = sample(100);
        write(dir.path(), &covers, &index).unwrap();
        std::fs::write(dir.path().join(TMP), b"half a snapshot").unwrap();
        assert_eq!(load(dir.path()).unwrap().1, covers);
        assert!(!dir.path().join(TMP).exists());
        remove(dir.path()).unwrap();
        remove(dir.path()).unwrap();
        assert!(matches!(read(dir.path(), |_| Ok(())), Outcome::Missing));
    }
}
