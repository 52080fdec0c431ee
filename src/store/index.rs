//! In-memory set of committed digests: an open-addressing table of u128 with
//! linear probing. Digests are xxh3 output, already uniformly random, so the
//! low 64 bits are used directly as the hash (no SipHash), mapped onto an
//! arbitrary capacity with a multiply-shift ("fastrange") so the table can be
//! sized to the expected count instead of the next power of two.
//! 16 bytes per slot, no control bytes; 0 marks an empty slot (the digest 0
//! itself is tracked by a flag). Deletion uses backward shifting, so prune
//! leaves no tombstones behind.

/// Grow when an insert would push the load above this.
const MAX_LOAD: f64 = 0.85;
/// After a grow (or when presizing), aim for this load.
const TARGET_LOAD: f64 = 0.65;

#[derive(Default)]
pub struct DigestIndex {
    slots: Vec<u128>,
    len: usize,
    has_zero: bool,
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

    /// Bytes held by the table (for metrics/reporting).
    pub fn heap_bytes(&self) -> usize {
        self.slots.capacity() * 16
    }

    #[inline]
    fn home(&self, d: u128) -> usize {
        (((d as u64) as u128 * self.slots.len() as u128) >> 64) as usize
    }

    #[inline]
    fn find(&self, d: u128) -> Result<usize, usize> {
        let n = self.slots.len();
        let mut i = self.home(d);
        // The load cap guarantees an empty slot, so this terminates.
        loop {
            let s = self.slots[i];
            if s == d {
                return Ok(i);
            }
            if s == 0 {
                return Err(i);
            }
            i += 1;
            if i == n {
                i = 0;
            }
        }
    }

    pub fn contains(&self, d: u128) -> bool {
        if d == 0 {
            return self.has_zero;
        }
        !self.slots.is_empty() && self.find(d).is_ok()
    }

    /// Returns true if newly inserted.
    pub fn insert(&mut self, d: u128) -> bool {
        if d == 0 {
            let new = !self.has_zero;
            self.has_zero = true;
            return new;
        }
        if (self.len + 1) as f64 > self.slots.len() as f64 * MAX_LOAD {
            self.resize(capacity_for(self.len + 1));
        }
        match self.find(d) {
            Ok(_) => false,
            Err(i) => {
                self.slots[i] = d;
                self.len += 1;
                true
            }
        }
    }

    /// Make room for `additional` more digests in one step (one rehash at most).
    pub fn reserve(&mut self, additional: usize) {
        let need = self.len + additional;
        if need as f64 > self.slots.len() as f64 * MAX_LOAD {
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
        if self.slots.is_empty() {
            return false;
        }
        let Ok(mut hole) = self.find(d) else {
            return false;
        };
        let n = self.slots.len();
        let mut j = hole;
        // Backward-shift: pull later entries of the cluster into the hole
        // unless their home lies cyclically in (hole, j].
        loop {
            j += 1;
            if j == n {
                j = 0;
            }
            let s = self.slots[j];
            if s == 0 {
                break;
            }
            let h = self.home(s);
            let stays = if hole <= j {
                hole < h && h <= j
            } else {
                hole < h || h <= j
            };
            if !stays {
                self.slots[hole] = s;
                hole = j;
            }
        }
        self.slots[hole] = 0;
        self.len -= 1;
        // Shrink after large prunes so memory follows retention.
        if self.slots.len() > 1024 && (self.len as f64) < self.slots.len() as f64 * 0.2 {
            self.resize(capacity_for(self.len));
        }
        true
    }

    fn resize(&mut self, cap: usize) {
        let old = std::mem::replace(&mut self.slots, vec![0u128; cap]);
        for d in old.into_iter().filter(|d| *d != 0) {
            if let Err(i) = self.find(d) {
                self.slots[i] = d;
            }
        }
    }
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
    fn collisions_in_home_slot_and_wraparound() {
        // Digests with identical low 64 bits all share a home slot; removing
        // from the middle of the cluster must keep the rest reachable.
        let mut t = DigestIndex::with_expected(64);
        let low = u64::MAX as u128; // home = last slot, so the cluster wraps
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
    }
}
