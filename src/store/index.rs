//! In-memory set of committed digests: open addressing with linear probing
//! over parallel arrays — a 1-byte tag per slot, then the digest's low 64 bits
//! and next 32 bits. Digests are xxh3 output, already uniformly random, so the
//! low 64 bits are used directly as the hash (no SipHash), mapped onto an
//! arbitrary capacity with a multiply-shift ("fastrange"): the table is sized
//! to the expected count, not the next power of two. The tag (8 bits of the
//! top byte, never 0 = empty) lets a miss — the common case, most records are
//! new — scan only the tag array, which mostly stays in CPU cache; the digest
//! arrays are read only on a tag match. There is no wrap-around: clusters may
//! run into a tail past `cap` that grows on demand. The digest 0 itself is
//! tracked by a flag.
//!
//! Why 96 + 8 of the 128 bits: 13 bytes a slot instead of 17 (10M IDs: ~186 MB
//! instead of ~243 MB at the target load). Two different IDs are confused only
//! if they agree on all 104 compared bits: with n stored IDs a new one does so
//! with probability n / 2^104 — 2.5e-24 per lookup at 50M stored, so ~2.5e-12
//! over a trillion lookups. A confusion would drop an event as a duplicate, so
//! this bound is what the memory saving was traded against, and it is far
//! below the hardware's own undetected memory error rate.

/// Grow when an insert would push the load above this.
const MAX_LOAD: f64 = 0.85;
/// After a grow (or when presizing), aim for this load.
const TARGET_LOAD: f64 = 0.7;
/// Spare slots past `cap` for the last clusters to run into.
const TAIL: usize = 64;

#[derive(Default)]
pub struct DigestIndex {
    tags: Vec<u8>,
    /// Bits 0..64 of each digest (also its hash).
    lows: Vec<u64>,
    /// Bits 64..96.
    highs: Vec<u32>,
    /// Number of home positions (lows.len() - tail).
    cap: usize,
    len: usize,
    has_zero: bool,
}

/// The part of a digest the table keeps and compares.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Key {
    tag: u8,
    low: u64,
    high: u32,
}

#[inline]
fn key(d: u128) -> Key {
    Key {
        tag: tag(d),
        low: d as u64,
        high: (d >> 64) as u32,
    }
}

#[inline]
fn tag(d: u128) -> u8 {
    ((d >> 120) as u8).max(1)
}

impl DigestIndex {
    /// A table that holds `expected` digests without growing.
    pub fn with_expected(expected: usize) -> Self {
        let mut t = DigestIndex::default();
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
        self.lows.capacity() * 8 + self.highs.capacity() * 4 + self.tags.capacity()
    }

    #[inline]
    fn home(&self, low: u64) -> usize {
        ((low as u128 * self.cap as u128) >> 64) as usize
    }

    /// Ok(position) if present, Err(first empty position) if not.
    #[inline]
    fn find(&self, k: Key) -> Result<usize, usize> {
        let start = self.home(k.low);
        let tags = &self.tags[start..];
        // Two tight passes over a few tag bytes: where the cluster ends, then
        // any tag match before it (rare on a miss).
        let run = tags.iter().position(|&tg| tg == 0).unwrap_or(tags.len());
        for (off, &tg) in tags[..run].iter().enumerate() {
            let p = start + off;
            if tg == k.tag && self.lows[p] == k.low && self.highs[p] == k.high {
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
    pub fn insert(&mut self, d: u128) -> bool {
        if d == 0 {
            let new = !self.has_zero;
            self.has_zero = true;
            return new;
        }
        if (self.len + 1) as f64 > self.cap as f64 * MAX_LOAD {
            self.resize(capacity_for(self.len + 1));
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
            self.lows.resize(p + 2 + TAIL, 0);
            self.highs.resize(p + 2 + TAIL, 0);
        }
        self.tags[p] = k.tag;
        self.lows[p] = k.low;
        self.highs[p] = k.high;
    }

    /// Make room for `additional` more digests in one step (one rehash at most).
    pub fn reserve(&mut self, additional: usize) {
        let need = self.len + additional;
        if need as f64 > self.cap as f64 * MAX_LOAD {
            self.resize(capacity_for(need));
        }
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
            if self.home(self.lows[j]) <= hole {
                self.tags[hole] = self.tags[j];
                self.lows[hole] = self.lows[j];
                self.highs[hole] = self.highs[j];
                hole = j;
            }
            j += 1;
        }
        self.tags[hole] = 0;
        self.lows[hole] = 0;
        self.highs[hole] = 0;
        self.len -= 1;
        // Shrink after large prunes so memory follows retention.
        if self.cap > 1024 && (self.len as f64) < self.cap as f64 * 0.25 {
            self.resize(capacity_for(self.len));
        }
        true
    }

    fn resize(&mut self, cap: usize) {
        let old_tags = std::mem::replace(&mut self.tags, prefaulted(cap + TAIL));
        let old_lows = std::mem::replace(&mut self.lows, prefaulted(cap + TAIL));
        let old_highs = std::mem::replace(&mut self.highs, prefaulted(cap + TAIL));
        self.cap = cap;
        // Old entries come roughly in home order, so this pass is mostly sequential.
        for ((tag, low), high) in old_tags.into_iter().zip(old_lows).zip(old_highs) {
            if tag == 0 {
                continue;
            }
            let k = Key { tag, low, high };
            if let Err(p) = self.find(k) {
                self.put(p, k);
            }
        }
    }
}

/// A zeroed vector whose pages are touched once, in order, up front.
/// calloc'd memory is faulted in lazily at random positions during the
/// build otherwise, which measured ~2x slower lookups afterwards.
fn prefaulted<T: Copy + Default>(n: usize) -> Vec<T> {
    let mut v = Vec::with_capacity(n);
    v.resize(n, T::default());
    v
}

fn capacity_for(n: usize) -> usize {
    ((n as f64 / TARGET_LOAD) as usize).max(16)
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
}
