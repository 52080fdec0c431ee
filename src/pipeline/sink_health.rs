//! Whether a sink answers at all, shared by every partition (and route)
//! that delivers to it.
//!
//! A sink is *down* when a delivery attempt got nothing through and failed
//! transiently (connection refused, 5xx for everything, broker gone); it is
//! up again at the first attempt that gets a record through. The operator
//! sees one WARN when it goes down and one INFO when it answers again, and
//! `tally_sink_up` / `tally_sink_outages_total`; the partitions' own retry
//! lines stay at debug while it is down (one probe record per partition
//! per backoff, see `worker::deliver`).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use crate::admin::metrics::Metrics;

#[derive(Debug)]
pub(crate) struct SinkHealth {
    sink: &'static str,
    down: AtomicBool,
    /// When it went down (set while down).
    since: Mutex<Option<Instant>>,
    /// Attempts that failed while down (probes, mostly).
    failed_attempts: AtomicU64,
    up_gauge: Gauge,
    outages: Counter,
}

impl SinkHealth {
    pub fn new(sink: &'static str, metrics: &Metrics) -> SinkHealth {
        let (up_gauge, outages) = metrics.sink(sink);
        SinkHealth {
            sink,
            down: AtomicBool::new(false),
            since: Mutex::new(None),
            failed_attempts: AtomicU64::new(0),
            up_gauge,
            outages,
        }
    }

    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    /// An attempt got nothing through and failed transiently. Logs once per
    /// outage, by whichever partition saw it first.
    pub fn attempt_failed(&self, reason: &str, retry_max: Duration) {
        self.failed_attempts.fetch_add(1, Ordering::Relaxed);
        if self.down.swap(true, Ordering::Relaxed) {
            return;
        }
        *self.since.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        self.up_gauge.set(0);
        self.outages.inc();
        tracing::warn!(
            sink = self.sink,
            class = "transient",
            "sink down: delivery attempts fail ({reason}); each waiting partition retries one \
             record per backoff (up to {retry_max:?}) until it answers, nothing is skipped"
        );
    }

    /// An attempt got at least one record through (delivered, or answered
    /// with a permanent rejection).
    pub fn answered(&self) {
        if !self.down.load(Ordering::Relaxed) || !self.down.swap(false, Ordering::Relaxed) {
            return;
        }
        self.up_gauge.set(1);
        let since = self.since.lock().unwrap_or_else(|e| e.into_inner()).take();
        let failed = self.failed_attempts.swap(0, Ordering::Relaxed);
        tracing::info!(
            sink = self.sink,
            down_for = ?since.map(|s| s.elapsed()).unwrap_or_default(),
            failed_attempts = failed,
            "sink answers again"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_outage_per_down_up_cycle() {
        let metrics = Metrics::new();
        let h = SinkHealth::new("http", &metrics);
        assert!(!h.is_down());
        h.answered();
        for _ in 0..5 {
            h.attempt_failed("refused", Duration::from_secs(1));
        }
        assert!(h.is_down());
        let text = metrics.encode().unwrap();
        assert!(text.contains(r#"tally_sink_up{sink="http"} 0"#), "{text}");
        assert!(
            text.contains(r#"tally_sink_outages_total{sink="http"} 1"#),
            "{text}"
        );
        h.answered();
        h.answered();
        assert!(!h.is_down());
        h.attempt_failed("refused", Duration::from_secs(1));
        let text = metrics.encode().unwrap();
        assert!(text.contains(r#"tally_sink_up{sink="http"} 0"#), "{text}");
        assert!(
            text.contains(r#"tally_sink_outages_total{sink="http"} 2"#),
            "{text}"
        );
        h.answered();
        let text = metrics.encode().unwrap();
        assert!(text.contains(r#"tally_sink_up{sink="http"} 1"#), "{text}");
    }
}
