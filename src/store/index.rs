//! In-memory set of committed digests: open addressing with linear probing.
//! A slot is a 1-byte tag (8 bits of the digest's top byte, never 0 = empty)
//! in one array and the digest's low 96 bits in another. Digests are xxh3
//! output, already uniformly random, so the low 64 bits are used directly as
//! the hash (no SipHash), mapped onto an arbitrary capacity with a
//! multiply-shift ("fastrange"): the table is sized to the expected count,
//! not the next power of two. A miss — the common case, most records are new
//! — scans only tag bytes, which share a cache line; a tag match reads the
//! slot's 12 bytes of bits, one more line. There is no wrap-around: clusters
//! may run into a tail past `cap` that grows on demand. The digest 0 itself
//! is tracked by a flag.
//!
//! Why 96 + 8 of the 128 bits: 13 bytes a slot instead of 17 (10M IDs: ~186 MB
//! instead of ~243 MB at the target load). Two different IDs are confused only
//! if they agree on all 104 compared bits: with n stored IDs a new one does so
//! with probability n / 2^104 — 2.5e-24 per lookup at 50M stored, so ~2.5e-12
//! over a trillion lookups. A confusion would drop an event as a duplicate, so
//! this bound is what the memory saving was traded against, and it is far
//! below the hardware's own undetected memory error rate.
//!
//! The index is split into `SHARDS` such tables by 4 bits of the digest that
//! the home position does not use. A table grows (or shrinks after a prune)
//! by rehashing into a new one, which briefly needs both: with one table that
//! was a transient 2.2x of the whole index (10M IDs: ~400 MB); with 16 shards
//! it is one shard's worth (~14 MB). More shards would shrink that further but
//! make each array smaller than a few 2 MiB huge pages, which the arrays ask
//! the kernel for: a random access into hundreds of MB is bound by TLB misses
//! (page walks are dear in a VM).

use super::prefetch;

/// Number of independently growing tables.
const SHARDS: usize = 16;

/// Grow when an insert would push the load above this.
const MAX_LOAD: f64 = 0.85;
/// When presizing (open, with the count known) or shrinking, aim for this load.
const TARGET_LOAD: f64 = 0.7;
/// After a grow by inserts, aim for this load. A grow rehashes the whole
/// shard, so a store growing from empty rehashes each ID
/// 1 / (1 - GROW_LOAD / MAX_LOAD) times: 5.7 at the presizing load (measured
/// 72-85 ns per committed ID), 3.4 at this one. The price is memory right
/// after a grow (the shards are balanced, so they grow about together):
/// 13 / 0.6 = 21.7 B per ID instead of 18.6 (10M IDs: 207 MiB, not 177);
/// a restart presizes at 0.7 again.
const GROW_LOAD: f64 = 0.6;
/// How many digests ahead a batched lookup or insert prefetches: enough
/// cache misses in flight to hide most of one (~100 ns) behind the probes
/// of the digests before it.
const PREFETCH_AHEAD: usize = 16;
/// Spare slots past `cap` for the last clusters to run into.
const TAIL: usize = 64;

/// One open-addressing table (also used alone for small per-commit sets).
/// Tags in one array, so a miss scans bytes that share a cache line; the
/// 96 compared bits of each slot together in another (`[u32; 3]`: low 64
/// bits, then bits 64..96), so a tag match costs one more line, not two.
#[derive(Default)]
pub(crate) struct DigestSet {
    tags: Vec<u8>,
    bits: Vec<[u32; 3]>,
    /// Number of home positions (slots before the tail).
    cap: usize,
    /// The most digests `cap` holds at `MAX_LOAD` (an insert past it grows
    /// the table): kept so an insert compares integers, not floats.
    grow_at: usize,
    len: usize,
    has_zero: bool,
}

/// The part of a digest the table keeps and compares.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Key {
    tag: u8,
    bits: [u32; 3],
}

#[inline]
fn key(d: u128) -> Key {
    Key {
        tag: tag(d),
        bits: [d as u32, (d >> 32) as u32, (d >> 64) as u32],
    }
}

#[inline]
fn low_of(bits: &[u32; 3]) -> u64 {
    bits[0] as u64 | (bits[1] as u64) << 32
}

#[inline]
fn tag(d: u128) -> u8 {
    ((d >> 120) as u8).max(1)
}

impl DigestSet {
    /// A table that holds `expected` digests without growing.
    pub fn with_expected(expected: usize) -> Self {
        let mut t = DigestSet::default();
        t.resize(capacity_for(expected));
        t
    }

    pub fn len(&self) -> usize {
        self.len + self.has_zero as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held by the table (for metrics/reporting).
    pub fn heap_bytes(&self) -> usize {
        self.tags.capacity() + self.bits.capacity() * 12
    }

    #[inline]
    fn home(&self, low: u64) -> usize {
        ((low as u128 * self.cap as u128) >> 64) as usize
    }

    /// Ok(position) if present, Err(first empty position) if not.
    #[inline]
    fn find(&self, k: Key) -> Result<usize, usize> {
        let start = self.home(low_of(&k.bits));
        let tags = &self.tags[start..];
        // Two tight passes over a few tag bytes: where the cluster ends, then
        // any tag match before it (rare on a miss).
        let run = tags.iter().position(|&tg| tg == 0).unwrap_or(tags.len());
        for (off, &tg) in tags[..run].iter().enumerate() {
            let p = start + off;
            if tg == k.tag && self.bits[p] == k.bits {
                return Ok(p);
            }
        }
        Err(start + run)
    }

    pub fn contains(&self, d: u128) -> bool {
        if d == 0 {
            return self.has_zero;
        }
        self.cap != 0 && self.find(key(d)).is_ok()
    }

    /// Returns true if newly inserted.
    #[inline]
    pub fn insert(&mut self, d: u128) -> bool {
        if d == 0 {
            let new = !self.has_zero;
            self.has_zero = true;
            return new;
        }
        if self.len + 1 > self.grow_at {
            self.resize(capacity_to_grow(self.len + 1));
        }
        let k = key(d);
        let Err(p) = self.find(k) else { return false };
        self.put(p, k);
        self.len += 1;
        true
    }

    fn put(&mut self, p: usize, k: Key) {
        if p + 1 >= self.tags.len() {
            // Keep the last slot empty so every probe ends inside the arrays.
            self.tags.resize(p + 2 + TAIL, 0);
            self.bits.resize(p + 2 + TAIL, [0; 3]);
        }
        self.tags[p] = k.tag;
        self.bits[p] = k.bits;
    }

    /// Make room for `additional` more digests in one step (one rehash at most).
    pub fn reserve(&mut self, additional: usize) {
        let need = self.len + additional;
        if need > self.grow_at {
            self.resize(capacity_to_grow(need));
        }
    }

    /// Start loading the cache lines `d`'s probe will read first (its home
    /// slot's tag and bits). A hint only: it reads nothing and cannot fault.
    #[inline]
    fn prefetch(&self, d: u128) {
        if self.cap == 0 {
            return;
        }
        let home = self.home(d as u64);
        prefetch::read(self.tags.as_ptr().wrapping_add(home));
        prefetch::read(self.bits.as_ptr().wrapping_add(home));
    }

    /// Returns true if it was present.
    pub fn remove(&mut self, d: u128) -> bool {
        if d == 0 {
            let had = self.has_zero;
            self.has_zero = false;
            return had;
        }
        if self.cap == 0 {
            return false;
        }
        let Ok(mut hole) = self.find(key(d)) else {
            return false;
        };
        // Backward-shift deletion: move later cluster members whose home is
        // at or before the hole into it, so no tombstones are left.
        let mut j = hole + 1;
        while j < self.tags.len() && self.tags[j] != 0 {
            if self.home(low_of(&self.bits[j])) <= hole {
                self.tags[hole] = self.tags[j];
                self.bits[hole] = self.bits[j];
                hole = j;
            }
            j += 1;
        }
        self.tags[hole] = 0;
        self.bits[hole] = [0; 3];
        self.len -= 1;
        // Shrink after large prunes so memory follows retention.
        if self.cap > 1024 && (self.len as f64) < self.cap as f64 * 0.25 {
            self.resize(capacity_for(self.len));
        }
        true
    }

    fn resize(&mut self, cap: usize) {
        let old_tags = std::mem::replace(&mut self.tags, prefaulted(cap + TAIL));
        let old_bits = std::mem::replace(&mut self.bits, prefaulted(cap + TAIL));
        self.cap = cap;
        self.grow_at = grow_at(cap);
        // Old entries come roughly in home order, so this pass is mostly sequential.
        for (tag, bits) in old_tags.into_iter().zip(old_bits) {
            if tag == 0 {
                continue;
            }
            // The old entries are distinct: each goes to the first empty
            // slot from its home, with no tag to compare on the way.
            let start = self.home(low_of(&bits));
            let run = self.tags[start..].iter().position(|&tg| tg == 0);
            let p = start + run.unwrap_or(self.tags.len() - start);
            self.put(p, Key { tag, bits });
        }
    }
}

/// The set of committed digests: `SHARDS` tables chosen by bits 92..96
/// (the home slot comes from bits 0..64, so a shard's slots stay uniform).
pub struct DigestIndex {
    shards: Vec<DigestSet>,
}

impl Default for DigestIndex {
    fn default() -> Self {
        DigestIndex {
            shards: (0..SHARDS).map(|_| DigestSet::default()).collect(),
        }
    }
}

#[inline]
fn shard_of(d: u128) -> usize {
    ((d >> 92) as usize) & (SHARDS - 1)
}

impl DigestIndex {
    /// An index that holds `expected` digests without growing (the store
    /// knows its count at open; a shard's share varies by ~1 %, inside the
    /// slack between the target and the maximum load).
    pub fn with_expected(expected: usize) -> Self {
        if expected == 0 {
            return DigestIndex::default();
        }
        let per = expected.div_ceil(SHARDS);
        DigestIndex {
            shards: (0..SHARDS).map(|_| DigestSet::with_expected(per)).collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(DigestSet::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(DigestSet::is_empty)
    }

    /// Bytes held by the tables (for metrics/reporting).
    pub fn heap_bytes(&self) -> usize {
        self.shards.iter().map(DigestSet::heap_bytes).sum::<usize>()
            + self.shards.capacity() * std::mem::size_of::<DigestSet>()
    }

    #[inline]
    pub fn contains(&self, d: u128) -> bool {
        self.shards[shard_of(d)].contains(d)
    }

    /// Returns true if newly inserted.
    #[inline]
    pub fn insert(&mut self, d: u128) -> bool {
        self.shards[shard_of(d)].insert(d)
    }

    /// Returns true if it was present.
    pub fn remove(&mut self, d: u128) -> bool {
        self.shards[shard_of(d)].remove(d)
    }

    /// `contains` for each of `ds`, in order. A commit's digests are random
    /// positions in a table of up to hundreds of MB, each a cache miss when
    /// probed one by one; prefetching `PREFETCH_AHEAD` digests ahead keeps
    /// several misses in flight.
    pub fn contains_each(&self, ds: &[u128]) -> Vec<bool> {
        let mut out = Vec::with_capacity(ds.len());
        for (i, d) in ds.iter().enumerate() {
            if let Some(ahead) = ds.get(i + PREFETCH_AHEAD) {
                self.shards[shard_of(*ahead)].prefetch(*ahead);
            }
            out.push(self.contains(*d));
        }
        out
    }

    /// Insert each of `ds` (a commit's fresh digests), prefetching ahead like
    /// `contains_each`. Room is made first, so a shard rarely grows
    /// mid-batch (a grow only wastes the prefetches already issued).
    pub fn insert_all(&mut self, ds: &[u128]) {
        self.reserve(ds.len());
        for (i, d) in ds.iter().enumerate() {
            if let Some(ahead) = ds.get(i + PREFETCH_AHEAD) {
                self.shards[shard_of(*ahead)].prefetch(*ahead);
            }
            self.insert(*d);
        }
    }

    /// Make room for about `additional` more digests spread over the shards.
    pub fn reserve(&mut self, additional: usize) {
        let per = additional.div_ceil(SHARDS);
        for s in &mut self.shards {
            s.reserve(per);
        }
    }

    /// Insert many digests at once (index rebuild). Random inserts into a
    /// table of hundreds of MB wait on a cache and a TLB miss each; ordered
    /// by their home slot they sweep the tables front to back instead. The
    /// home is monotonic in the low 64 bits (multiply-shift), so a counting
    /// sort of the chunk by shard and the top `ORDER_BITS` of those bits is
    /// enough to make consecutive inserts land a few cache lines apart. The
    /// shards are independent, so they are filled by up to one thread per
    /// core. `scratch` is reused between calls (it grows to the chunk's size).
    pub fn extend_bulk(&mut self, ds: &[u128], scratch: &mut Vec<u128>) {
        const ORDER_BITS: u32 = 12;
        let key =
            |d: &u128| (shard_of(*d) << ORDER_BITS) | (*d as u64 >> (64 - ORDER_BITS)) as usize;
        let mut starts = vec![0usize; (SHARDS << ORDER_BITS) + 1];
        for d in ds {
            starts[key(d) + 1] += 1;
        }
        for i in 0..SHARDS << ORDER_BITS {
            starts[i + 1] += starts[i];
        }
        let bounds: Vec<usize> = (0..=SHARDS).map(|s| starts[s << ORDER_BITS]).collect();
        scratch.clear();
        scratch.resize(ds.len(), 0);
        for d in ds {
            let k = key(d);
            scratch[starts[k]] = *d;
            starts[k] += 1;
        }
        let fill = |shards: &mut [DigestSet], first: usize| {
            for (i, shard) in shards.iter_mut().enumerate() {
                let part = &scratch[bounds[first + i]..bounds[first + i + 1]];
                shard.reserve(part.len());
                for d in part {
                    shard.insert(*d);
                }
            }
        };
        let threads = if ds.len() >= 1 << 16 {
            std::thread::available_parallelism().map_or(1, |n| n.get().clamp(1, 4))
        } else {
            1
        };
        let per = SHARDS.div_ceil(threads);
        std::thread::scope(|scope| {
            let mut rest: &mut [DigestSet] = &mut self.shards;
            let mut first = 0;
            while rest.len() > per {
                let (mine, tail) = rest.split_at_mut(per);
                let fill = &fill;
                scope.spawn(move || fill(mine, first));
                rest = tail;
                first += per;
            }
            fill(rest, first);
        });
    }
}

/// Snapshot serialisation (`snapshot.rs` writes the file around it): each
/// shard as it is in memory — `cap`, `len`, the zero flag, the slot count,
/// then the tag bytes and the 12 bytes of bits per slot (little endian) — so
/// loading is a sequential copy into arrays of the same layout, with no
/// rehash and no second copy of the index.
impl DigestIndex {
    /// Bytes `write_to` writes.
    pub(crate) fn serialized_len(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| SHARD_HEADER as u64 + s.tags.len() as u64 * 13)
            .sum()
    }

    pub(crate) fn write_to(&self, w: &mut impl std::io::Write) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(SERIAL_CHUNK * 12);
        for s in &self.shards {
            w.write_all(&(s.cap as u64).to_le_bytes())?;
            w.write_all(&(s.len as u64).to_le_bytes())?;
            w.write_all(&[s.has_zero as u8])?;
            w.write_all(&(s.tags.len() as u64).to_le_bytes())?;
            w.write_all(&s.tags)?;
            for chunk in s.bits.chunks(SERIAL_CHUNK) {
                buf.clear();
                for b in chunk {
                    for v in b {
                        buf.extend_from_slice(&v.to_le_bytes());
                    }
                }
                w.write_all(&buf)?;
            }
        }
        Ok(())
    }

    /// The index `write_to` wrote, read from `r`, which holds at most
    /// `limit` bytes of it (so a damaged length cannot make it allocate more
    /// than the file could hold). Any error is a reason not to use it.
    pub(crate) fn read_from(r: &mut impl std::io::Read, limit: u64) -> Result<DigestIndex, String> {
        let io = |e: std::io::Error| format!("reading it failed: {e}");
        let mut left = limit;
        let mut shards = Vec::with_capacity(SHARDS);
        let mut buf = vec![0u8; SERIAL_CHUNK * 12];
        for i in 0..SHARDS {
            let mut head = [0u8; SHARD_HEADER];
            r.read_exact(&mut head).map_err(io)?;
            let u64_at = |at: usize| {
                let mut b = [0u8; 8];
                b.copy_from_slice(&head[at..at + 8]);
                u64::from_le_bytes(b)
            };
            let (cap, len, zero, slots) = (u64_at(0), u64_at(8), head[16], u64_at(17));
            let bad = |what: &str| format!("shard {i}: {what}");
            if zero > 1 {
                return Err(bad("bad zero flag"));
            }
            left = left
                .checked_sub(SHARD_HEADER as u64)
                .ok_or_else(|| bad("past the end"))?;
            if slots.checked_mul(13).is_none_or(|n| n > left) {
                return Err(bad("more slots than the file holds"));
            }
            left -= slots * 13;
            let (cap, len, slots) = (cap as usize, len as usize, slots as usize);
            // Checked: a cap near 2^64 must not wrap past this test into a
            // table whose home slots lie beyond its arrays.
            if (cap == 0 && (slots != 0 || len != 0))
                || (cap != 0 && cap.checked_add(TAIL).is_none_or(|n| slots < n))
            {
                return Err(bad("slot count does not fit its capacity"));
            }
            let mut tags: Vec<u8> = Vec::with_capacity(slots);
            advise_huge_pages(&mut tags);
            while tags.len() < slots {
                let n = (slots - tags.len()).min(buf.len());
                r.read_exact(&mut buf[..n]).map_err(io)?;
                tags.extend_from_slice(&buf[..n]);
            }
            if tags.last().is_some_and(|t| *t != 0)
                || tags.iter().filter(|t| **t != 0).count() != len
            {
                return Err(bad("tags do not match its length"));
            }
            let mut bits: Vec<[u32; 3]> = Vec::with_capacity(slots);
            advise_huge_pages(&mut bits);
            let word = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            while bits.len() < slots {
                let n = (slots - bits.len()).min(SERIAL_CHUNK);
                r.read_exact(&mut buf[..n * 12]).map_err(io)?;
                bits.extend(
                    buf[..n * 12]
                        .chunks_exact(12)
                        .map(|b| [word(&b[0..4]), word(&b[4..8]), word(&b[8..12])]),
                );
            }
            shards.push(DigestSet {
                tags,
                bits,
                cap,
                grow_at: grow_at(cap),
                len,
                has_zero: zero == 1,
            });
        }
        Ok(DigestIndex { shards })
    }

    /// Number of shards (a snapshot of another shard count is not loaded).
    pub(crate) const SHARDS: usize = SHARDS;

    /// The wrapping sum of `fingerprint_of` over every digest held: with
    /// `len`, what a loaded snapshot is checked against the digest log's
    /// records by (the digests are uniformly random, so two different sets
    /// of one size agree only with probability ~2^-104).
    pub(crate) fn fingerprint(&self) -> u128 {
        let mut sum = 0u128;
        for s in &self.shards {
            for (tag, bits) in s.tags.iter().zip(&s.bits) {
                if *tag != 0 {
                    sum = sum.wrapping_add(slot_fingerprint(*tag, bits));
                }
            }
        }
        sum
    }
}

/// The 104 bits of `d` the index keeps (0 for the digest 0, kept by a flag).
#[cfg(test)]
fn fingerprint_of(d: u128) -> u128 {
    if d == 0 {
        return 0;
    }
    let k = key(d);
    slot_fingerprint(k.tag, &k.bits)
}

/// `fingerprint_of(digest_log::unpack(rec))`, straight from a digest-log
/// record's bytes (the open's pass over a whole snapshot prefix).
#[inline]
pub(crate) fn record_fingerprint(rec: &[u8; 13]) -> u128 {
    let [top, h0, h1, h2, h3, low @ ..] = *rec;
    let low = u64::from_be_bytes(low);
    let high = u32::from_be_bytes([h0, h1, h2, h3]);
    if top == 0 && high == 0 && low == 0 {
        return 0;
    }
    (top.max(1) as u128) << 96 | (high as u128) << 64 | low as u128
}

#[inline]
fn slot_fingerprint(tag: u8, bits: &[u32; 3]) -> u128 {
    (tag as u128) << 96 | (bits[2] as u128) << 64 | (bits[1] as u128) << 32 | bits[0] as u128
}

/// Bytes before a shard's arrays in a snapshot: cap, len, zero flag, slots.
const SHARD_HEADER: usize = 8 + 8 + 1 + 8;
/// Slots converted per step when writing or reading a snapshot (1.5 MB of buffer).
const SERIAL_CHUNK: usize = 1 << 17;

/// A zeroed vector whose pages are touched once, in order, up front.
/// calloc'd memory is faulted in lazily at random positions during the
/// build otherwise, which measured ~2x slower lookups afterwards.
fn prefaulted<T: Copy + Default>(n: usize) -> Vec<T> {
    let mut v = Vec::with_capacity(n);
    advise_huge_pages(&mut v);
    v.resize(n, T::default());
    v
}

/// Ask for transparent huge pages for `v`'s (still untouched) buffer, where
/// the system leaves that to the program (`/sys/kernel/mm/transparent_hugepage/enabled`
/// = `madvise`, the common default). Only whole 2 MiB pages inside the
/// buffer qualify; smaller arrays are left alone. Advice only: a refusal
/// changes nothing but speed.
#[cfg(target_os = "linux")]
fn advise_huge_pages<T>(v: &mut Vec<T>) {
    const HUGE: usize = 2 << 20;
    let bytes = v.capacity() * std::mem::size_of::<T>();
    let begin = v.as_mut_ptr() as usize;
    let start = begin.next_multiple_of(HUGE);
    let end = (begin + bytes) & !(HUGE - 1);
    if end > start {
        // SAFETY: [start, end) lies inside `v`'s allocation, which this
        // function holds exclusively; MADV_HUGEPAGE neither reads, writes nor
        // unmaps memory, it only changes how future faults are backed.
        let rc =
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
        if rc != 0 {
            tracing::debug!(
                "madvise(MADV_HUGEPAGE) refused: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge_pages<T>(_: &mut Vec<T>) {}

/// `n > grow_at(cap)` exactly when `n as f64 > cap as f64 * MAX_LOAD`
/// (an integer exceeds a real iff it exceeds its floor).
fn grow_at(cap: usize) -> usize {
    (cap as f64 * MAX_LOAD) as usize
}

fn capacity_for(n: usize) -> usize {
    ((n as f64 / TARGET_LOAD) as usize).max(16)
}

fn capacity_to_grow(n: usize) -> usize {
    ((n as f64 / GROW_LOAD) as usize).max(16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn rand_digests(n: usize, seed: u64) -> Vec<u128> {
        (0..n as u64)
            .map(|i| xxhash_rust::xxh3::xxh3_128(&(i ^ seed.rotate_left(17)).to_le_bytes()))
            .collect()
    }

    #[test]
    fn behaves_like_a_set_under_inserts_and_removes() {
        let ds = rand_digests(20_000, 1);
        let mut t = DigestIndex::default();
        let mut reference = HashSet::new();
        for d in &ds {
            assert_eq!(t.insert(*d), reference.insert(*d));
        }
        assert!(!t.insert(ds[5]));
        assert!(t.insert(0));
        reference.insert(0);
        // remove every third, then check all
        for d in ds.iter().step_by(3) {
            assert!(t.remove(*d));
            reference.remove(d);
        }
        assert!(!t.remove(ds[0]));
        assert_eq!(t.len(), reference.len());
        for d in &ds {
            assert_eq!(t.contains(*d), reference.contains(d), "{d:x}");
        }
        assert!(t.contains(0));
        for d in rand_digests(5_000, 2) {
            assert!(!t.contains(d));
        }
        // remove everything: shrinks and stays correct
        for d in &ds {
            t.remove(*d);
        }
        t.remove(0);
        assert_eq!(t.len(), 0);
        assert!(!t.contains(ds[1]));
    }

    #[test]
    fn exact_on_full_digest_not_just_low_bits() {
        let mut t = DigestIndex::with_expected(10);
        let a = (1u128 << 64) | 77;
        t.insert(a);
        assert!(t.contains(a));
        assert!(!t.contains(77)); // same low 64 bits, different digest
        assert!(!t.contains((2u128 << 64) | 77));
    }

    #[test]
    fn collisions_in_home_slot_and_tail() {
        // Digests with identical low 64 bits all share a home slot; removing
        // from the middle of the cluster must keep the rest reachable.
        let mut t = DigestIndex::with_expected(64);
        let low = u64::MAX as u128; // home = last slot, so the cluster runs into the tail
        let ds: Vec<u128> = (1..=20u128).map(|h| (h << 64) | low).collect();
        for d in &ds {
            t.insert(*d);
        }
        for d in ds.iter().skip(3).step_by(4) {
            assert!(t.remove(*d));
        }
        for (i, d) in ds.iter().enumerate() {
            assert_eq!(t.contains(*d), i < 3 || (i - 3) % 4 != 0, "{i}");
        }
        // A long run of equal homes past the end grows the tail instead of failing.
        let many: Vec<u128> = (1..=500u128).map(|h| (h << 64) | low).collect();
        for d in &many {
            t.insert(*d);
        }
        assert!(many.iter().all(|d| t.contains(*d)));
        assert!(!t.contains((9999u128 << 64) | low));
    }

    #[test]
    fn same_tag_different_digest() {
        let mut t = DigestIndex::with_expected(8);
        let a = (0xab << 120) | 5;
        let b = (0xab << 120) | (7 << 64) | 5; // same home and tag
        t.insert(a);
        assert!(!t.contains(b));
        t.insert(b);
        assert!(t.remove(a));
        assert!(t.contains(b) && !t.contains(a));
    }

    #[test]
    fn compares_104_bits_by_design() {
        // Digests that differ only in bits 96..120 are one ID to the table
        // (the module docs give the probability of meeting such a pair).
        let mut t = DigestIndex::with_expected(8);
        let a = (0x5a << 120) | (3 << 64) | 9;
        t.insert(a);
        assert!(t.contains(a | (1 << 100)));
        // Any difference in the low 96 bits or the tag byte is a different ID.
        assert!(!t.contains(a ^ (1 << 95)));
        assert!(!t.contains(a ^ 1));
        assert!(!t.contains(a ^ (1 << 121)));
    }

    #[test]
    fn bulk_load_equals_one_by_one() {
        let ds = rand_digests(50_000, 9);
        let mut one = DigestIndex::with_expected(ds.len());
        for d in &ds {
            one.insert(*d);
        }
        let mut bulk = DigestIndex::with_expected(ds.len());
        let mut scratch = Vec::new();
        for chunk in ds.chunks(4099) {
            bulk.extend_bulk(chunk, &mut scratch);
        }
        // Repeats within and across chunks count once.
        bulk.extend_bulk(&ds[..100], &mut scratch);
        bulk.extend_bulk(&[ds[7], ds[7], 0, 0], &mut scratch);
        assert_eq!(bulk.len(), one.len() + 1);
        assert!(bulk.contains(0));
        assert!(ds.iter().all(|d| bulk.contains(*d)));
        assert!(rand_digests(1000, 10).iter().all(|d| !bulk.contains(*d)));
    }

    #[test]
    fn shards_stay_balanced() {
        let ds = rand_digests(256_000, 11);
        let mut t = DigestIndex::default();
        for d in &ds {
            t.insert(*d);
        }
        let (min, max) = t
            .shards
            .iter()
            .map(DigestSet::len)
            .fold((usize::MAX, 0), |(a, b), n| (a.min(n), b.max(n)));
        // ~16,000 each; a bad shard function would put them all in one.
        assert!(min > 15_000 && max < 17_000, "{min}..{max}");
    }

    #[test]
    fn batched_lookups_and_inserts_equal_one_by_one_across_grows() {
        // From empty, in commit-sized batches, so every shard grows many
        // times between (and, with uneven batches, inside) the batches.
        let ds = rand_digests(60_000, 21);
        let mut t = DigestIndex::default();
        let mut reference = HashSet::new();
        let mut caps_seen = HashSet::new();
        for chunk in ds.chunks(1_777) {
            let got = t.contains_each(chunk);
            let want: Vec<bool> = chunk.iter().map(|d| reference.contains(d)).collect();
            assert_eq!(got, want);
            t.insert_all(chunk);
            reference.extend(chunk.iter().copied());
            caps_seen.insert(t.shards[0].cap);
            // Every digest inserted so far is found after any grow.
            assert!(t.contains_each(chunk).iter().all(|c| *c));
        }
        assert!(
            caps_seen.len() > 5,
            "shard 0 grew only {} times",
            caps_seen.len()
        );
        assert_eq!(t.len(), reference.len());
        assert!(t.contains_each(&ds).iter().all(|c| *c));
        let misses = rand_digests(5_000, 22);
        assert!(t.contains_each(&misses).iter().all(|c| !*c));
        // Repeats (within a batch, of stored digests) and the digest 0.
        t.insert_all(&[ds[3], ds[3], 0, 0]);
        assert_eq!(t.len(), reference.len() + 1);
        assert_eq!(t.contains_each(&[0, ds[3], misses[0]]), [true, true, false]);
        assert!(t.contains_each(&[]).is_empty());
    }

    #[test]
    fn a_grow_aims_below_the_presizing_load() {
        let mut t = DigestSet::default();
        for d in rand_digests(10_000, 23) {
            t.insert(d);
        }
        // Between grows the load stays in [GROW_LOAD, MAX_LOAD].
        let load = t.len as f64 / t.cap as f64;
        assert!((GROW_LOAD - 0.01..=MAX_LOAD).contains(&load), "{load}");
        // Presized (the store at open) stays at the denser target load.
        let p = DigestSet::with_expected(10_000);
        assert_eq!(p.cap, capacity_for(10_000));
        assert!(p.cap < capacity_to_grow(10_000));
    }

    #[test]
    fn grows_and_keeps_every_digest() {
        let ds = rand_digests(100_000, 7);
        let mut t = DigestIndex::with_expected(16);
        for d in &ds {
            assert!(t.insert(*d));
        }
        assert_eq!(t.len(), ds.len());
        assert!(ds.iter().all(|d| t.contains(*d)));
        assert!(t.heap_bytes() < ds.len() * 13 * 2);
    }

    /// The fingerprint from a log record is the one from its digest, and
    /// the index's is the sum over what it holds (top byte 0, the digest 0).
    #[test]
    fn fingerprints_agree_between_log_records_and_the_index() {
        use crate::store::digest_log::{RECORD, pack, unpack};
        let mut ds: Vec<u128> = (0..5_000u64)
            .map(|i| xxhash_rust::xxh3::xxh3_128(&i.to_le_bytes()))
            .collect();
        ds.extend([0, 1, 0x00ff_ffff_1234_0000_0000_0000_0000_0001, u128::MAX]);
        let mut index = DigestIndex::default();
        let mut sum = 0u128;
        for d in &ds {
            let mut rec = Vec::new();
            pack(*d, &mut rec);
            let rec: [u8; RECORD] = rec.try_into().unwrap();
            assert_eq!(
                record_fingerprint(&rec),
                fingerprint_of(unpack(&rec)),
                "{d:x}"
            );
            sum = sum.wrapping_add(record_fingerprint(&rec));
            index.insert(unpack(&rec));
        }
        assert_eq!(index.fingerprint(), sum);
        index.remove(ds[7]);
        assert_ne!(index.fingerprint(), sum);
    }
}
