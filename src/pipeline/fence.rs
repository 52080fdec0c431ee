//! The instant after which a group member must not start a sink call for
//! its partitions: one heartbeat interval before the coordinator could
//! expire its session and hand the partitions to another member.
//!
//! The membership task moves the deadline forward with every accepted
//! heartbeat or offset commit; the partition workers only read it, so a
//! worker stops on its own when the membership task is stuck (a hung
//! coordinator connection) or the process was frozen. In static mode the
//! fence never closes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::time::Instant;

#[derive(Debug, Clone, Default)]
pub(crate) struct Fence {
    /// None: static assignment, never fenced.
    deadline: Option<Arc<Deadline>>,
}

#[derive(Debug)]
struct Deadline {
    base: Instant,
    /// Nanoseconds after `base`; 0 = closed.
    nanos: AtomicU64,
}

impl Fence {
    /// A fence that never closes (static assignment).
    pub fn open() -> Fence {
        Fence::default()
    }

    /// A group generation's fence, closed until the first `extend`.
    pub fn closed() -> Fence {
        Fence {
            deadline: Some(Arc::new(Deadline {
                base: Instant::now(),
                nanos: AtomicU64::new(0),
            })),
        }
    }

    /// Sets the deadline (None closes the fence for good: the generation is over).
    pub fn set(&self, deadline: Option<Instant>) {
        let Some(d) = &self.deadline else {
            return;
        };
        let nanos = deadline.map_or(0, |at| {
            (at.saturating_duration_since(d.base).as_nanos() as u64).max(1)
        });
        d.nanos.store(nanos, Ordering::Release);
    }

    /// The deadline; None when the fence never closes.
    fn deadline(&self) -> Option<Instant> {
        let d = self.deadline.as_ref()?;
        let nanos = d.nanos.load(Ordering::Acquire);
        Some(d.base + std::time::Duration::from_nanos(nanos))
    }

    /// True while a new sink call may start.
    pub fn is_open(&self) -> bool {
        self.deadline().is_none_or(|at| Instant::now() < at)
    }

    /// Resolves once the deadline has passed (never for an open fence),
    /// following the deadline as heartbeats move it.
    pub async fn closes(&self) {
        loop {
            match self.deadline() {
                None => std::future::pending::<()>().await,
                Some(at) if Instant::now() >= at => return,
                Some(at) => tokio::time::sleep_until(at).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn open_never_closes_and_a_group_fence_follows_its_deadline() {
        let open = Fence::open();
        assert!(open.is_open());
        assert!(
            tokio::time::timeout(Duration::from_millis(20), open.closes())
                .await
                .is_err()
        );

        let f = Fence::closed();
        assert!(!f.is_open(), "closed until the first heartbeat");
        f.set(Some(Instant::now() + Duration::from_millis(60)));
        assert!(f.is_open());
        let started = Instant::now();
        // Moved forward while a worker waits on it: the wait follows.
        let g = f.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            g.set(Some(Instant::now() + Duration::from_millis(90)));
        });
        f.closes().await;
        assert!(started.elapsed() >= Duration::from_millis(110));
        assert!(!f.is_open());
        f.set(Some(Instant::now() + Duration::from_secs(5)));
        assert!(f.is_open());
        f.set(None);
        assert!(!f.is_open());
    }
}
