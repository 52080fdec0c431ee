//! Bounded cache of `(tenantId, subscriptionExternalKey) → subscriptionId`.
//!
//! Two generations instead of a full LRU: inserts go to `young`; when it is
//! half the capacity, `young` becomes `old` and the previous `old` is dropped.
//! A hit in `old` is promoted. O(1), at most `capacity` entries, and keys in
//! steady use never fall out. Entries also expire after `ttl`, so a
//! subscription re-created under the same external key is picked up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Key = (Arc<str>, String);

#[derive(Debug, Clone)]
struct Entry {
    subscription_id: Arc<str>,
    stored_at: Instant,
}

#[derive(Debug)]
pub(super) struct LookupCache {
    inner: Mutex<Generations>,
    half: usize,
    ttl: Duration,
}

#[derive(Debug, Default)]
struct Generations {
    young: HashMap<Key, Entry>,
    old: HashMap<Key, Entry>,
}

impl LookupCache {
    pub fn new(capacity: usize, ttl: Duration) -> LookupCache {
        LookupCache {
            inner: Mutex::new(Generations::default()),
            half: (capacity / 2).max(1),
            ttl,
        }
    }

    pub fn get(&self, tenant: &Arc<str>, external_key: &str) -> Option<Arc<str>> {
        let key = (Arc::clone(tenant), external_key.to_string());
        let mut g = self.lock();
        if let Some(e) = g.young.get(&key) {
            if e.stored_at.elapsed() < self.ttl {
                return Some(Arc::clone(&e.subscription_id));
            }
            g.young.remove(&key);
            return None;
        }
        let e = g.old.remove(&key)?;
        if e.stored_at.elapsed() >= self.ttl {
            return None;
        }
        let id = Arc::clone(&e.subscription_id);
        self.insert_locked(&mut g, key, e);
        Some(id)
    }

    pub fn insert(&self, tenant: &Arc<str>, external_key: &str, subscription_id: Arc<str>) {
        let key = (Arc::clone(tenant), external_key.to_string());
        let entry = Entry {
            subscription_id,
            stored_at: Instant::now(),
        };
        let mut g = self.lock();
        g.old.remove(&key);
        self.insert_locked(&mut g, key, entry);
    }

    /// Forget a mapping Kill Bill no longer agrees with.
    pub fn invalidate(&self, tenant: &Arc<str>, external_key: &str) {
        let key = (Arc::clone(tenant), external_key.to_string());
        let mut g = self.lock();
        g.young.remove(&key);
        g.old.remove(&key);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        let g = self.lock();
        g.young.len() + g.old.len()
    }

    fn insert_locked(&self, g: &mut Generations, key: Key, entry: Entry) {
        if g.young.len() >= self.half && !g.young.contains_key(&key) {
            g.old = std::mem::take(&mut g.young);
        }
        g.young.insert(key, entry);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations> {
        // A panic while holding this lock cannot leave the maps inconsistent
        // in a way that matters for a cache: keep using it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Lookups in progress, so that a burst of records for one subscription on a
/// cold cache makes one `GET`, not one per record.
type Flight<T> = Arc<tokio::sync::OnceCell<T>>;

#[derive(Debug)]
pub(super) struct Flights<T> {
    inner: Mutex<HashMap<Key, Flight<T>>>,
}

impl<T: Clone> Flights<T> {
    pub fn new() -> Flights<T> {
        Flights {
            inner: Mutex::new(HashMap::new()),
        }
    }

    /// Runs `f` unless a lookup for the same key is already running, in
    /// which case its result is shared.
    pub async fn run<F, Fut>(&self, tenant: &Arc<str>, external_key: &str, f: F) -> T
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = T>,
    {
        let key = (Arc::clone(tenant), external_key.to_string());
        let cell = Arc::clone(self.lock().entry(key.clone()).or_default());
        let result = cell.get_or_init(f).await.clone();
        // Whoever finishes first removes it; a later burst starts afresh.
        let mut map = self.lock();
        if map.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            map.remove(&key);
        }
        result
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Flight<T>>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_keeps_hot_keys() {
        let c = LookupCache::new(4, Duration::from_secs(60));
        let t: Arc<str> = Arc::from("t");
        c.insert(&t, "hot", Arc::from("h"));
        for i in 0..100 {
            c.insert(&t, &format!("k{i}"), Arc::from("x"));
            assert!(c.len() <= 4);
            assert_eq!(c.get(&t, "hot").as_deref(), Some("h"), "after {i}");
        }
        assert!(c.get(&t, "k0").is_none());
    }

    #[tokio::test]
    async fn concurrent_lookups_share_one_call() {
        let flights: Flights<u32> = Flights::new();
        let calls = std::sync::atomic::AtomicU32::new(0);
        let t: Arc<str> = Arc::from("t");
        let one = || async {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            7
        };
        let results =
            futures_util::future::join_all((0..10).map(|_| flights.run(&t, "k", one))).await;
        assert!(results.iter().all(|r| *r == 7));
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(flights.run(&t, "k", one).await, 7);
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[test]
    fn expires_and_invalidates() {
        let c = LookupCache::new(10, Duration::from_millis(0));
        let t: Arc<str> = Arc::from("t");
        c.insert(&t, "a", Arc::from("1"));
        assert!(c.get(&t, "a").is_none());
        let c = LookupCache::new(10, Duration::from_secs(60));
        c.insert(&t, "a", Arc::from("1"));
        let other: Arc<str> = Arc::from("u");
        assert!(c.get(&other, "a").is_none(), "tenants are separate");
        c.invalidate(&t, "a");
        assert!(c.get(&t, "a").is_none());
    }
}
