//! Response buffers kept for reuse across requests.
//!
//! A fetch response is about a megabyte, read into one buffer whose bytes
//! the records then borrow (zero-copy) until the worker is done with them.
//! Allocated fresh per fetch, that buffer is new memory every time: the
//! allocator maps it (musl maps and unmaps every allocation this large),
//! each of its pages faults in and is zeroed by the kernel as the socket
//! read first touches it. A buffer whose last record is dropped comes back
//! here instead, and the next response is read into its resident pages.
//!
//! Idle buffers are memory outside the fetch budget (which counts buffers
//! while records hold them), so the pool stays small: `MAX_IDLE` buffers,
//! `MAX_IDLE_BYTES` in all.

use std::sync::Mutex;

use bytes::Bytes;

/// Responses smaller than this are allocated and freed as before: the
/// allocator serves them from its heap without faults worth saving.
const MIN_POOLED: usize = 64 * 1024;
/// A new buffer's capacity is rounded up to this: responses to the same
/// fetch size differ by a few bytes, and a buffer sized exactly to one
/// would be too small for the next.
const ROUND: usize = 128 * 1024;
const MAX_IDLE: usize = 8;
const MAX_IDLE_BYTES: usize = 8 << 20;

static IDLE: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// An empty buffer to read a response of `len` bytes into, with room for
/// `prealloc` bytes now (it grows as data arrives past that).
pub(super) fn take(len: usize, prealloc: usize) -> Vec<u8> {
    let reused = if len >= MIN_POOLED {
        pick(&mut lock(), prealloc)
    } else {
        None
    };
    reused.unwrap_or_else(|| {
        let capacity = if len >= MIN_POOLED {
            prealloc.next_multiple_of(ROUND)
        } else {
            prealloc
        };
        Vec::with_capacity(capacity)
    })
}

/// The first idle buffer that holds `prealloc` bytes without growing.
fn pick(idle: &mut Vec<Vec<u8>>, prealloc: usize) -> Option<Vec<u8>> {
    let i = idle.iter().position(|b| b.capacity() >= prealloc)?;
    Some(idle.swap_remove(i))
}

/// The response in `buf` as `Bytes`; once every slice of it is dropped the
/// buffer returns to the pool.
pub(super) fn share(buf: Vec<u8>) -> Bytes {
    if buf.capacity() < MIN_POOLED {
        return Bytes::from(buf);
    }
    Bytes::from_owner(Pooled(buf))
}

struct Pooled(Vec<u8>);

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        give(std::mem::take(&mut self.0));
    }
}

fn give(buf: Vec<u8>) {
    keep(&mut lock(), buf);
}

/// Keeps `buf` (emptied) unless the pool is full.
fn keep(idle: &mut Vec<Vec<u8>>, mut buf: Vec<u8>) {
    buf.clear();
    let held: usize = idle.iter().map(Vec::capacity).sum();
    if idle.len() < MAX_IDLE && held + buf.capacity() <= MAX_IDLE_BYTES {
        idle.push(buf);
    }
}

fn lock() -> std::sync::MutexGuard<'static, Vec<Vec<u8>>> {
    IDLE.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_buffers_are_reused_within_the_caps() {
        let mut idle = Vec::new();
        let mut buf = Vec::with_capacity(MIN_POOLED * 2);
        buf.extend_from_slice(b"old response");
        let ptr = buf.as_ptr();
        keep(&mut idle, buf);
        assert!(
            pick(&mut idle, MIN_POOLED * 4).is_none(),
            "too small: not reused"
        );
        let again = pick(&mut idle, MIN_POOLED).expect("the kept buffer");
        assert_eq!(again.as_ptr(), ptr);
        assert!(again.is_empty(), "a reused buffer starts empty");
        assert!(idle.is_empty());

        for _ in 0..MAX_IDLE + 2 {
            keep(&mut idle, Vec::with_capacity(MIN_POOLED));
        }
        assert_eq!(idle.len(), MAX_IDLE, "at most MAX_IDLE buffers");
        let mut idle = Vec::new();
        keep(&mut idle, Vec::with_capacity(MAX_IDLE_BYTES / 2 + 1));
        keep(&mut idle, Vec::with_capacity(MAX_IDLE_BYTES / 2 + 1));
        assert_eq!(idle.len(), 1, "at most MAX_IDLE_BYTES in all");
    }

    /// Other tests in this process read responses too and share the pool,
    /// so this checks what holds whatever they do.
    #[test]
    fn a_dropped_response_returns_within_the_caps() {
        let mut buf = take(MIN_POOLED * 2, MIN_POOLED * 2);
        buf.extend_from_slice(&[7u8; 100]);
        let bytes = share(buf);
        let slice = bytes.slice(4..10);
        drop(bytes);
        assert_eq!(&slice[..], &[7u8; 6], "a slice keeps the buffer alive");
        drop(slice);
        let idle = lock();
        assert!(idle.len() <= MAX_IDLE);
        assert!(idle.iter().map(Vec::capacity).sum::<usize>() <= MAX_IDLE_BYTES);
        assert!(
            idle.iter()
                .all(|b| b.is_empty() && b.capacity() >= MIN_POOLED)
        );
    }

    #[test]
    fn small_responses_are_plain_bytes() {
        let bytes = share(b"abcd".to_vec());
        assert!(bytes.is_unique());
        assert_eq!(&bytes[..], b"abcd");
    }
}
