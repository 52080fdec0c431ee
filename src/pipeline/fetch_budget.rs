//! The process-wide fetch-memory budget (`[pipeline] fetch_memory_mb`).
//!
//! Every partition's fetcher reserves the bytes a fetch may bring before it
//! asks the broker; the reservation travels with the batch and is released
//! when the worker is done with it. So what fetched batches keep alive is
//! bounded by one number, however many partitions this process owns.
//!
//! * Size: a fetch may cost `budget / (partitions × window)` (at least
//!   `MIN_FETCH_BYTES`); the fetcher asks the broker for the record bytes
//!   that buys, up to `kafka.fetch_max_bytes`, so that with few partitions
//!   nothing changes and with many each keeps a fair share.
//! * Fairness: waiters are served strictly first come, first served; a
//!   partition that just got bytes queues behind those already waiting.
//! * Progress: a reservation is granted when it fits, or when nothing at
//!   all is reserved — a record batch larger than the budget is still
//!   fetched, alone. A batch larger than its reservation (Kafka returns at
//!   least one whole batch) is charged in full once it arrives, so later
//!   fetches wait for it. No deadlock: a worker frees its batch's bytes by
//!   delivering, which never waits for another partition's fetch.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::admin::metrics::FetchBudgetMetrics;

/// The smallest per-fetch share the budget hands out, and the fewest record
/// bytes a fetch asks for (unless `kafka.fetch_max_bytes` is smaller):
/// below it request overhead dominates.
pub const MIN_FETCH_BYTES: usize = 64 * 1024;

pub(crate) struct FetchBudget {
    limit: usize,
    /// Batches one partition can hold at once: the prefetch window plus the
    /// one its worker is delivering.
    window: usize,
    partitions: AtomicUsize,
    inner: Mutex<Inner>,
    metrics: FetchBudgetMetrics,
}

#[derive(Default)]
struct Inner {
    used: usize,
    queue: VecDeque<Waiter>,
    next_id: u64,
}

struct Waiter {
    id: u64,
    want: usize,
    grant: Arc<Grant>,
}

#[derive(Default)]
struct Grant {
    granted: AtomicBool,
    notify: Notify,
}

impl FetchBudget {
    pub fn new(limit: usize, window: usize, metrics: FetchBudgetMetrics) -> Arc<FetchBudget> {
        metrics.limit.set(gauge_value(limit));
        Arc::new(FetchBudget {
            limit: limit.max(1),
            window: window.max(1),
            partitions: AtomicUsize::new(0),
            inner: Mutex::new(Inner::default()),
            metrics,
        })
    }

    /// Counts a fetching partition for the per-fetch size while it lives.
    pub fn join(self: &Arc<Self>) -> Member {
        self.partitions.fetch_add(1, Ordering::Relaxed);
        Member(Arc::clone(self))
    }

    /// What one fetch may cost now: the partition's share of the budget
    /// over its window, at least `MIN_FETCH_BYTES`.
    pub fn fetch_size(&self) -> usize {
        let partitions = self.partitions.load(Ordering::Relaxed).max(1);
        let share = self.limit / partitions.saturating_mul(self.window);
        share.max(MIN_FETCH_BYTES)
    }

    /// One partition's share of the whole budget (its window's worth), at
    /// least `MIN_FETCH_BYTES`: what a restore's step may grow to.
    pub fn partition_share(&self) -> usize {
        let partitions = self.partitions.load(Ordering::Relaxed).max(1);
        (self.limit / partitions).max(MIN_FETCH_BYTES)
    }

    /// Waits (first come, first served) until `want` bytes fit, and holds
    /// them until the returned `Hold` is dropped. Cancel-safe: a waiter
    /// dropped before or after its grant gives everything back.
    pub async fn reserve(self: &Arc<Self>, want: usize) -> Hold {
        let mut queued = {
            let mut inner = self.lock();
            if inner.queue.is_empty() && self.fits(&inner, want) {
                inner.used += want;
                self.metrics.used.set(gauge_value(inner.used));
                return self.hold(want);
            }
            let id = inner.next_id;
            inner.next_id += 1;
            let grant = Arc::new(Grant::default());
            inner.queue.push_back(Waiter {
                id,
                want,
                grant: Arc::clone(&grant),
            });
            QueuedGuard {
                budget: self,
                id,
                want,
                grant,
                done: false,
            }
        };
        self.metrics.waits.inc();
        let started = std::time::Instant::now();
        while !queued.grant.granted.load(Ordering::Acquire) {
            queued.grant.notify.notified().await;
        }
        queued.done = true;
        self.metrics
            .wait_seconds
            .inc_by(started.elapsed().as_secs_f64());
        self.hold(want)
    }

    /// `want` bytes now if `reserve` would grant them without waiting
    /// (nobody queued, and they fit); else None and nothing is queued. For
    /// a caller that can free bytes of its own before it waits (a restore
    /// applies its step).
    pub fn try_reserve(self: &Arc<Self>, want: usize) -> Option<Hold> {
        let mut inner = self.lock();
        if !(inner.queue.is_empty() && self.fits(&inner, want)) {
            return None;
        }
        inner.used += want;
        self.metrics.used.set(gauge_value(inner.used));
        Some(self.hold(want))
    }

    /// Accounts for `bytes` already in memory (a restore's step), without
    /// waiting, beyond the limit if need be; later reservations wait for them.
    pub fn charge(self: &Arc<Self>, bytes: usize) -> Hold {
        let mut inner = self.lock();
        inner.used += bytes;
        self.metrics.used.set(gauge_value(inner.used));
        self.hold(bytes)
    }

    fn hold(self: &Arc<Self>, bytes: usize) -> Hold {
        Hold {
            budget: Arc::clone(self),
            bytes,
        }
    }

    fn fits(&self, inner: &Inner, want: usize) -> bool {
        inner.used == 0 || inner.used.saturating_add(want) <= self.limit
    }

    /// Grants queued waiters in order while the head fits.
    fn grant_waiters(&self, inner: &mut Inner) {
        while let Some(head) = inner.queue.front() {
            if !self.fits(inner, head.want) {
                break;
            }
            inner.used += head.want;
            if let Some(w) = inner.queue.pop_front() {
                w.grant.granted.store(true, Ordering::Release);
                // Stores a permit when the waiter is not polling yet.
                w.grant.notify.notify_one();
            }
        }
        self.metrics.used.set(gauge_value(inner.used));
    }

    fn release(&self, bytes: usize) {
        let mut inner = self.lock();
        inner.used = inner.used.saturating_sub(bytes);
        self.grant_waiters(&mut inner);
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update leaves `Inner` consistent; a panic elsewhere cannot
        // tear it, so a poisoned lock is still good.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[cfg(test)]
    fn used(&self) -> usize {
        self.lock().used
    }
}

fn gauge_value(bytes: usize) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

/// A partition counted by `FetchBudget::fetch_size`.
pub(crate) struct Member(Arc<FetchBudget>);

impl Drop for Member {
    fn drop(&mut self) {
        self.0.partitions.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Bytes held against the budget; released on drop.
pub(crate) struct Hold {
    budget: Arc<FetchBudget>,
    bytes: usize,
}

impl std::fmt::Debug for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hold").field("bytes", &self.bytes).finish()
    }
}

impl Hold {
    /// Charges what the fetch actually keeps alive: gives back what it did
    /// not use, or takes the excess of a batch larger than asked for
    /// (beyond the limit if need be: it is already in memory).
    pub fn resize(&mut self, actual: usize) {
        let mut inner = self.budget.lock();
        if actual < self.bytes {
            inner.used -= self.bytes - actual;
            self.budget.grant_waiters(&mut inner);
        } else {
            inner.used += actual - self.bytes;
            self.budget.metrics.used.set(gauge_value(inner.used));
        }
        self.bytes = actual;
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}

/// A queued reservation; on drop before it returned (the fetch was
/// cancelled), leaves the queue or gives back what was granted.
struct QueuedGuard<'a> {
    budget: &'a FetchBudget,
    id: u64,
    want: usize,
    grant: Arc<Grant>,
    done: bool,
}

impl Drop for QueuedGuard<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut inner = self.budget.lock();
        // Granting happens under this lock, so `granted` is settled here.
        if self.grant.granted.load(Ordering::Acquire) {
            inner.used = inner.used.saturating_sub(self.want);
        } else if let Some(pos) = inner.queue.iter().position(|w| w.id == self.id) {
            inner.queue.remove(pos);
        }
        // Either way the head may fit now.
        self.budget.grant_waiters(&mut inner);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const KIB: usize = 1024;

    fn budget(limit: usize) -> Arc<FetchBudget> {
        FetchBudget::new(limit, 3, FetchBudgetMetrics::default())
    }

    async fn pending<F: std::future::Future>(f: F) -> bool {
        tokio::time::timeout(Duration::from_millis(50), f)
            .await
            .is_err()
    }

    #[test]
    fn fetch_size_is_a_share_within_bounds() {
        let b = budget(64 * 1024 * KIB);
        assert_eq!(
            b.fetch_size(),
            64 * 1024 * KIB / 3,
            "one partition's window"
        );
        let members: Vec<_> = (0..8).map(|_| b.join()).collect();
        assert_eq!(b.fetch_size(), 64 * 1024 * KIB / (8 * 3));
        let more: Vec<_> = (0..56).map(|_| b.join()).collect();
        assert_eq!(b.fetch_size(), 64 * 1024 * KIB / (64 * 3));
        assert_eq!(b.partition_share(), 64 * 1024 * KIB / 64);
        let many: Vec<_> = (0..1000).map(|_| b.join()).collect();
        assert_eq!(b.fetch_size(), MIN_FETCH_BYTES, "floor");
        assert_eq!(b.partition_share(), MIN_FETCH_BYTES, "floor");
        drop((many, more));
        assert_eq!(
            b.fetch_size(),
            64 * 1024 * KIB / (8 * 3),
            "share grows back"
        );
        drop(members);
    }

    #[tokio::test]
    async fn waits_until_released_and_serves_in_order() {
        let b = budget(100);
        let first = b.reserve(60).await;
        let b2 = Arc::clone(&b);
        let second = tokio::spawn(async move { b2.reserve(60).await });
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        // A small request behind a queued big one waits its turn.
        assert!(pending(b.reserve(10)).await, "FIFO: no overtaking");
        assert!(!second.is_finished());
        drop(first);
        let second = second.await.unwrap();
        assert_eq!(b.used(), 60);
        drop(second);
        assert_eq!(b.used(), 0);
    }

    #[tokio::test]
    async fn try_reserve_never_overtakes_or_queues() {
        let b = budget(100);
        let first = b.try_reserve(60).expect("fits");
        assert!(b.try_reserve(60).is_none(), "does not fit");
        assert_eq!(b.used(), 60);
        let b2 = Arc::clone(&b);
        let queued = tokio::spawn(async move { b2.reserve(60).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        // Fits, but someone waits: FIFO, as `reserve`.
        assert!(b.try_reserve(10).is_none());
        drop(first);
        let queued = queued.await.unwrap();
        assert!(b.try_reserve(40).is_some(), "fits, nobody waits");
        drop(queued);
        assert_eq!(b.used(), 0);
        let nothing_held = b.try_reserve(500).expect("alone, like reserve");
        assert_eq!(b.used(), 500);
        drop(nothing_held);
    }

    #[tokio::test]
    async fn larger_than_the_budget_proceeds_alone() {
        let b = budget(100);
        let big = b.reserve(500).await;
        assert_eq!(b.used(), 500);
        assert!(pending(b.reserve(1)).await);
        drop(big);
        let _small = b.reserve(1).await;
    }

    #[tokio::test]
    async fn resize_gives_back_or_charges_the_excess() {
        let b = budget(100);
        let mut h = b.reserve(80).await;
        let b2 = Arc::clone(&b);
        let waiter = tokio::spawn(async move { b2.reserve(50).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        h.resize(30); // the answer was smaller: the waiter fits now
        let w = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(b.used(), 80);
        h.resize(200); // a batch larger than asked: charged in full
        assert_eq!(b.used(), 250);
        drop((h, w));
        assert_eq!(b.used(), 0);
    }

    #[tokio::test]
    async fn cancelled_waiter_leaves_the_queue() {
        let b = budget(100);
        let h = b.reserve(100).await;
        assert!(pending(b.reserve(50)).await, "cancelled by the timeout");
        drop(h);
        assert_eq!(b.used(), 0, "the cancelled waiter was not granted");
        let _a = b.reserve(100).await;
    }

    #[tokio::test]
    async fn many_partitions_share_without_deadlock() {
        // The pipeline's shape: per partition a fetcher reserving bytes into
        // a 2-batch window, and a worker releasing them after "delivery".
        // 64 partitions want 64 × 3 × 64 KiB while the budget holds ten
        // fetches: everyone finishes, and only a granted fetch is in use.
        let b = budget(10 * MIN_FETCH_BYTES);
        let peak = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let (b, peak) = (Arc::clone(&b), Arc::clone(&peak));
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Hold>(2);
            tasks.push(tokio::spawn(async move {
                while let Some(batch) = rx.recv().await {
                    tokio::task::yield_now().await;
                    drop(batch);
                }
            }));
            tasks.push(tokio::spawn(async move {
                let _m = b.join();
                for _ in 0..20 {
                    let Ok(slot) = tx.reserve().await else { return };
                    let hold = b.reserve(b.fetch_size()).await;
                    peak.fetch_max(b.used(), Ordering::Relaxed);
                    slot.send(hold);
                }
            }));
        }
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(30), t)
                .await
                .expect("no deadlock")
                .unwrap();
        }
        assert_eq!(b.used(), 0);
        assert_eq!(peak.load(Ordering::Relaxed), 10 * MIN_FETCH_BYTES);
    }
}
