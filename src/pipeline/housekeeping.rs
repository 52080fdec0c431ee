//! Periodic store upkeep while the daemon runs: retention pruning.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Live;

/// How often to prune: a quarter of the retention, between 10 s and 10 min —
/// often enough that the store never holds much more than the retention,
/// rare enough that the index write lock is not a factor.
pub(super) fn prune_interval(retention: Duration) -> Duration {
    (retention / 4).clamp(Duration::from_secs(10), Duration::from_secs(600))
}

pub(super) async fn run(live: Arc<Live>, retention: Option<Duration>, cancel: CancellationToken) {
    let Some(retention) = retention else {
        return;
    };
    let every = prune_interval(retention);
    tracing::info!(
        retention = %humantime::format_duration(retention),
        every = %humantime::format_duration(every),
        "tracking-ID retention enabled"
    );
    loop {
        let store = Arc::clone(&live.store);
        let pruned = tokio::task::spawn_blocking(move || store.prune_older_than(retention)).await;
        match pruned {
            Ok(Ok(stats)) => {
                live.metrics.pruned_ids.inc_by(stats.ids as u64);
            }
            Ok(Err(e)) => tracing::error!("retention prune failed: {e}"),
            Err(e) => tracing::error!("retention prune task failed: {e}"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_is_bounded() {
        assert_eq!(
            prune_interval(Duration::from_secs(1)),
            Duration::from_secs(10)
        );
        assert_eq!(
            prune_interval(Duration::from_secs(120)),
            Duration::from_secs(30)
        );
        assert_eq!(
            prune_interval(Duration::from_secs(30 * 86400)),
            Duration::from_secs(600)
        );
    }
}
