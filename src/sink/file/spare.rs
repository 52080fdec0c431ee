//! Line buffers handed back by the writer thread for the next sink call.
//!
//! A sink call's buffer holds a whole batch (up to `max_batch_records`
//! lines, megabytes), and a fresh one per call is fresh memory: the
//! allocator maps it, every page faults in on first touch, and it is
//! unmapped again once written. Reusing the few buffers in flight keeps
//! their pages resident.

use std::sync::Mutex;

/// At most this many idle buffers are kept. A buffer is only created when
/// none is idle, so the pool never holds more than were in flight at once;
/// the cap bounds that for a burst of concurrent calls.
const MAX_SPARES: usize = 8;

/// A buffer grown past this (a batch of huge records) is freed, not kept.
const MAX_SPARE_BYTES: usize = 16 << 20;

#[derive(Debug, Default)]
pub(super) struct Spares(Mutex<Vec<Vec<u8>>>);

impl Spares {
    /// An empty buffer with room for at least `capacity` bytes.
    pub(super) fn take(&self, capacity: usize) -> Vec<u8> {
        let spare = self.0.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match spare {
            Some(mut buf) => {
                buf.reserve(capacity);
                buf
            }
            None => Vec::with_capacity(capacity),
        }
    }

    /// Keeps `buf` (emptied) for a later `take`, within the caps.
    pub(super) fn give(&self, mut buf: Vec<u8>) {
        if buf.capacity() > MAX_SPARE_BYTES {
            return;
        }
        buf.clear();
        let mut spares = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if spares.len() < MAX_SPARES {
            spares.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_a_given_buffer_and_respects_the_caps() {
        let spares = Spares::default();
        let mut buf = spares.take(1000);
        buf.extend_from_slice(b"line\n");
        let ptr = buf.as_ptr();
        spares.give(buf);
        let again = spares.take(10);
        assert!(again.is_empty(), "a reused buffer starts empty");
        assert_eq!(again.as_ptr(), ptr, "the given buffer is handed out again");
        assert!(again.capacity() >= 1000);

        for _ in 0..MAX_SPARES + 2 {
            spares.give(Vec::with_capacity(64));
        }
        assert_eq!(spares.0.lock().unwrap().len(), MAX_SPARES);

        let spares = Spares::default();
        spares.give(Vec::with_capacity(MAX_SPARE_BYTES + 1));
        assert!(
            spares.0.lock().unwrap().is_empty(),
            "an oversized buffer is freed"
        );
    }
}
