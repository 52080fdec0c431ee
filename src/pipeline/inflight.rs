//! Dedupe keys currently being delivered, across all partitions of the process.
//!
//! The same key can arrive on two partitions at once; only one may be sent.
//! The other waits until the first is committed (then it is a duplicate) or
//! failed (then it is tried).

use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard};

use std::hash::{BuildHasherDefault, Hasher};

/// Digests are already uniformly random: hash by their low 64 bits.
#[derive(Debug, Default)]
pub struct LowBitsHasher(u64);

impl Hasher for LowBitsHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes.iter().take(8) {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64;
    }
}

pub(super) type DigestHasher = BuildHasherDefault<LowBitsHasher>;

#[derive(Debug, Default)]
pub struct InFlight {
    keys: Mutex<HashSet<u128, DigestHasher>>,
}

impl InFlight {
    /// Reserve `digest`; false when another delivery holds it.
    pub fn try_reserve(&self, digest: u128) -> bool {
        match self.keys.lock() {
            Ok(mut keys) => keys.insert(digest),
            Err(poisoned) => poisoned.into_inner().insert(digest),
        }
    }

    /// Hold the set for a whole round of reservations: one lock instead of
    /// one per record.
    pub fn reserve_many(&self) -> Reservations<'_> {
        Reservations(
            self.keys
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    pub fn release(&self, digests: impl IntoIterator<Item = u128>) {
        let mut keys = match self.keys.lock() {
            Ok(k) => k,
            Err(poisoned) => poisoned.into_inner(),
        };
        for d in digests {
            keys.remove(&d);
        }
    }
}

/// The in-flight set, locked (see `InFlight::reserve_many`).
pub struct Reservations<'a>(MutexGuard<'a, HashSet<u128, DigestHasher>>);

impl Reservations<'_> {
    /// Reserve `digest`; false when another delivery holds it.
    pub fn try_reserve(&mut self, digest: u128) -> bool {
        self.0.insert(digest)
    }
}
