//! Prometheus metrics (`prometheus-client`): one registry per daemon.
//!
//! Names follow Prometheus conventions: `tally_` prefix, base units
//! (seconds, bytes), counters end in `_total`. The pipeline holds cheap
//! handles (an `Arc`'d atomic each) obtained once per route or partition, so
//! the hot path never touches the registry's label maps.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteOutcome {
    pub route: String,
    /// delivered | duplicate | dead_lettered | retried
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    pub route: String,
    pub topic: String,
    pub partition: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkStatus {
    pub sink: &'static str,
    /// ok | transient | halt | permanent (the classification of the call's worst result)
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabel {
    pub sink: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RetryClass {
    pub route: String,
    /// transient | halt
    pub class: &'static str,
}

type FGauge = Gauge<f64, AtomicU64>;
type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~65 s: fsyncs and HTTP calls alike.
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

/// Every metric tally exports.
pub struct Metrics {
    registry: Registry,
    records: Family<RouteOutcome, Counter>,
    retries: Family<RetryClass, Counter>,
    halted: Family<RouteLabel, Gauge>,
    committed: Family<PartitionLabels, Gauge>,
    high_watermark: Family<PartitionLabels, Gauge>,
    lag: Family<PartitionLabels, Gauge>,
    backoff: Family<PartitionLabels, FGauge>,
    sink_latency: HistogramFamily<SinkStatus>,
    sink_up: Family<SinkLabel, Gauge>,
    sink_outages: Family<SinkLabel, Counter>,
    changelog: ChangelogFamilies,
    pub commit_latency: Histogram,
    pub store_size: Gauge,
    pub store_ids: Gauge,
    pub store_dead_letters: Gauge,
    pub pruned_ids: Counter,
    pub broker_connected: Gauge,
    pub partitions_assigned: Gauge,
    pub fetch_budget: FetchBudgetMetrics,
    /// Exported in group mode only (see `register_group`).
    pub group: GroupMetrics,
}

/// The process-wide fetch budget (`[pipeline] fetch_memory_mb`).
#[derive(Debug, Clone, Default)]
pub struct FetchBudgetMetrics {
    pub limit: Gauge,
    pub used: Gauge,
    pub waits: Counter,
    pub wait_seconds: Counter<f64, AtomicU64>,
}

/// The membership of `[assignment] mode = "group"`.
#[derive(Debug, Clone, Default)]
pub struct GroupMetrics {
    pub generation: Gauge,
    pub members: Gauge,
    pub leader: Gauge,
    pub rebalances: Counter,
    pub last_rebalance: FGauge,
    pub fenced: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("tally");
        let m = Metrics {
            records: Family::default(),
            retries: Family::default(),
            halted: Family::default(),
            committed: Family::default(),
            high_watermark: Family::default(),
            lag: Family::default(),
            backoff: Family::default(),
            sink_latency: Family::new_with_constructor(latency_histogram),
            sink_up: Family::default(),
            sink_outages: Family::default(),
            changelog: ChangelogFamilies::new(),
            commit_latency: latency_histogram(),
            store_size: Gauge::default(),
            store_ids: Gauge::default(),
            store_dead_letters: Gauge::default(),
            pruned_ids: Counter::default(),
            broker_connected: Gauge::default(),
            partitions_assigned: Gauge::default(),
            fetch_budget: FetchBudgetMetrics::default(),
            group: GroupMetrics::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "build",
            "tally version, git commit and target",
            Info::new(vec![
                ("version", env!("CARGO_PKG_VERSION")),
                ("commit", env!("TALLY_GIT_COMMIT")),
                ("target", env!("TALLY_TARGET")),
            ]),
        );
        r.register(
            "records",
            "Records resolved per route by outcome (retried counts records re-sent after a failed attempt)",
            m.records.clone(),
        );
        r.register(
            "sink_retries",
            "Delivery attempts that failed and will be retried, per route and failure class",
            m.retries.clone(),
        );
        r.register(
            "route_halted",
            "1 while the route's sink answers with a halt-class failure (credentials, disk full): progress stopped",
            m.halted.clone(),
        );
        r.register(
            "partition_committed_offset",
            "Next offset to resolve, as committed in the store",
            m.committed.clone(),
        );
        r.register(
            "partition_high_watermark",
            "Log end offset from the latest fetch response (probed while the partition is blocked)",
            m.high_watermark.clone(),
        );
        r.register(
            "partition_lag",
            "Records between the committed offset and the high watermark",
            m.lag.clone(),
        );
        r.register_with_unit(
            "partition_retry_backoff",
            "Current delivery retry delay of the partition; 0 when not retrying",
            Unit::Seconds,
            m.backoff.clone(),
        );
        r.register_with_unit(
            "sink_request_duration",
            "Duration of sink delivery calls by sink and result class",
            Unit::Seconds,
            m.sink_latency.clone(),
        );
        r.register(
            "sink_up",
            "0 while every delivery attempt to the sink fails transiently (endpoint down): partitions probe it with one record per backoff",
            m.sink_up.clone(),
        );
        r.register(
            "sink_outages",
            "Times the sink went down (from answering to every attempt failing)",
            m.sink_outages.clone(),
        );
        r.register_with_unit(
            "commit_duration",
            "Duration of one group commit (store transaction + flush)",
            Unit::Seconds,
            m.commit_latency.clone(),
        );
        r.register_with_unit(
            "store_size",
            "Bytes the store occupies on disk",
            Unit::Bytes,
            m.store_size.clone(),
        );
        r.register(
            "store_ids",
            "Tracking IDs (dedupe keys) in the store",
            m.store_ids.clone(),
        );
        r.register(
            "store_dead_letters",
            "Dead letters kept in the store",
            m.store_dead_letters.clone(),
        );
        r.register(
            "store_pruned_ids",
            "Tracking IDs dropped by retention",
            m.pruned_ids.clone(),
        );
        r.register(
            "broker_connected",
            "1 while the last metadata request to the broker succeeded",
            m.broker_connected.clone(),
        );
        r.register(
            "partitions_assigned",
            "Partitions this process consumes",
            m.partitions_assigned.clone(),
        );
        let b = &m.fetch_budget;
        r.register_with_unit(
            "fetch_budget",
            "Bytes fetched batches of all partitions may hold at once ([pipeline] fetch_memory_mb)",
            Unit::Bytes,
            b.limit.clone(),
        );
        r.register_with_unit(
            "fetch_budget_used",
            "Bytes fetched batches hold now, reserved before each fetch and released after delivery",
            Unit::Bytes,
            b.used.clone(),
        );
        r.register(
            "fetch_budget_waits",
            "Fetches that waited for budget bytes (the budget, not the sink, held them back)",
            b.waits.clone(),
        );
        r.register_with_unit(
            "fetch_budget_wait",
            "Time fetches spent waiting for budget bytes, summed over partitions",
            Unit::Seconds,
            b.wait_seconds.clone(),
        );
        m.changelog.register(r);
        Metrics { registry, ..m }
    }

    /// Adds the group metrics to the exposition (group mode).
    pub fn register_group(&mut self) {
        let g = self.group.clone();
        let r = &mut self.registry;
        r.register(
            "group_generation",
            "Generation of the consumer group this member is in; -1 while joining or fenced",
            g.generation,
        );
        r.register(
            "group_members",
            "Members of the current generation, as the leader counted them",
            g.members,
        );
        r.register(
            "group_leader",
            "1 while this member is the group leader (it computes the assignment)",
            g.leader,
        );
        r.register(
            "group_rebalances",
            "Rebalances this member went through (joins after the first)",
            g.rebalances,
        );
        r.register_with_unit(
            "group_last_rebalance_duration",
            "From stopping the partitions (or starting to join) to owning the new assignment, last time",
            Unit::Seconds,
            g.last_rebalance,
        );
        r.register(
            "group_fenced",
            "Times the session deadline passed without the coordinator's confirmation: deliveries stopped, then rejoined",
            g.fenced,
        );
    }

    /// Drops a partition's series (revoked: its new owner reports it).
    pub fn remove_partition(&self, route: &str, topic: &str, partition: i32) {
        let l = PartitionLabels {
            route: route.to_string(),
            topic: topic.to_string(),
            partition: partition.to_string(),
        };
        self.committed.remove(&l);
        self.high_watermark.remove(&l);
        self.lag.remove(&l);
        self.backoff.remove(&l);
    }

    /// Handles for one route.
    pub fn route(&self, route: &str) -> RouteMetrics {
        let c = |outcome| {
            self.records
                .get_or_create(&RouteOutcome {
                    route: route.to_string(),
                    outcome,
                })
                .clone()
        };
        let retry = |class| {
            self.retries
                .get_or_create(&RetryClass {
                    route: route.to_string(),
                    class,
                })
                .clone()
        };
        let label = RouteLabel {
            route: route.to_string(),
        };
        let cl = &self.changelog;
        RouteMetrics {
            changelog: ChangelogMetrics {
                restored_ids: cl.restored_ids.get_or_create(&label).clone(),
                restored_records: cl.restored_records.get_or_create(&label).clone(),
                restore_duration: cl.restore_duration.get_or_create(&label).clone(),
                write_duration: cl.write_duration.get_or_create(&label).clone(),
                written_bytes: cl.written_bytes.get_or_create(&label).clone(),
                write_retries: cl.write_retries.get_or_create(&label).clone(),
            },
            delivered: c("delivered"),
            duplicates: c("duplicate"),
            dead_lettered: c("dead_lettered"),
            retried: c("retried"),
            transient_retries: retry("transient"),
            halt_retries: retry("halt"),
            halted: self
                .halted
                .get_or_create(&RouteLabel {
                    route: route.to_string(),
                })
                .clone(),
        }
    }

    /// Handles for one sink: its up gauge (set to 1 here) and outage counter.
    pub fn sink(&self, sink: &'static str) -> (Gauge, Counter) {
        let l = SinkLabel { sink };
        let up = self.sink_up.get_or_create(&l).clone();
        up.set(1);
        (up, self.sink_outages.get_or_create(&l).clone())
    }

    /// Handles for one partition.
    pub fn partition(&self, route: &str, topic: &str, partition: i32) -> PartitionMetrics {
        let l = PartitionLabels {
            route: route.to_string(),
            topic: topic.to_string(),
            partition: partition.to_string(),
        };
        PartitionMetrics {
            committed: self.committed.get_or_create(&l).clone(),
            high_watermark: self.high_watermark.get_or_create(&l).clone(),
            lag: self.lag.get_or_create(&l).clone(),
            backoff: self.backoff.get_or_create(&l).clone(),
        }
    }

    /// Time one sink call.
    pub fn observe_sink(&self, sink: &'static str, status: &'static str, seconds: f64) {
        self.sink_latency
            .get_or_create(&SinkStatus { sink, status })
            .observe(seconds);
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(8 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// One route's counters (the former `RouteStats`).
#[derive(Debug, Clone, Default)]
pub struct RouteMetrics {
    pub delivered: Counter,
    pub duplicates: Counter,
    pub dead_lettered: Counter,
    pub retried: Counter,
    pub transient_retries: Counter,
    pub halt_retries: Counter,
    pub halted: Gauge,
    pub changelog: ChangelogMetrics,
}

/// One route's changelog handles.
#[derive(Debug, Clone)]
pub struct ChangelogMetrics {
    pub restored_ids: Counter,
    pub restored_records: Counter,
    pub restore_duration: Histogram,
    pub write_duration: Histogram,
    pub written_bytes: Counter,
    pub write_retries: Counter,
}

impl Default for ChangelogMetrics {
    fn default() -> Self {
        ChangelogMetrics {
            restored_ids: Counter::default(),
            restored_records: Counter::default(),
            restore_duration: restore_histogram(),
            write_duration: latency_histogram(),
            written_bytes: Counter::default(),
            write_retries: Counter::default(),
        }
    }
}

/// One partition's gauges. Lag is derived whenever either end moves, so it
/// stays right even when only the watermark changes (sink down, fetcher
/// blocked, watermark probed).
#[derive(Debug, Clone, Default)]
pub struct PartitionMetrics {
    pub committed: Gauge,
    pub high_watermark: Gauge,
    pub lag: Gauge,
    pub backoff: FGauge,
}

impl PartitionMetrics {
    pub fn set_committed(&self, offset: i64) {
        self.committed.set(offset);
        self.update_lag();
    }

    pub fn set_high_watermark(&self, hw: i64) {
        self.high_watermark.set(hw);
        self.update_lag();
    }

    fn update_lag(&self) {
        let hw = self.high_watermark.get();
        if hw > 0 || self.committed.get() == 0 {
            self.lag.set((hw - self.committed.get()).max(0));
        }
    }

    pub fn lag(&self) -> i64 {
        self.lag.get()
    }
}

/// `pipeline::changelog`: what restores read, what commits wrote.
struct ChangelogFamilies {
    restored_ids: Family<RouteLabel, Counter>,
    restored_records: Family<RouteLabel, Counter>,
    restore_duration: HistogramFamily<RouteLabel>,
    write_duration: HistogramFamily<RouteLabel>,
    written_bytes: Family<RouteLabel, Counter>,
    write_retries: Family<RouteLabel, Counter>,
}

fn restore_histogram() -> Histogram {
    // 10 ms .. ~5.5 min: an empty changelog to tens of millions of IDs.
    Histogram::new(exponential_buckets(0.01, 2.0, 16))
}

impl ChangelogFamilies {
    fn new() -> Self {
        ChangelogFamilies {
            restored_ids: Family::default(),
            restored_records: Family::default(),
            restore_duration: Family::new_with_constructor(restore_histogram),
            write_duration: Family::new_with_constructor(latency_histogram),
            written_bytes: Family::default(),
            write_retries: Family::default(),
        }
    }

    fn register(&self, r: &mut Registry) {
        r.register(
            "changelog_restored_ids",
            "Tracking IDs read from the changelog into the store by restores (already held ones included)",
            self.restored_ids.clone(),
        );
        r.register(
            "changelog_restored_records",
            "Changelog records applied by restores",
            self.restored_records.clone(),
        );
        r.register_with_unit(
            "changelog_restore_duration",
            "Duration of one partition's restore from the changelog, before it fetches",
            Unit::Seconds,
            self.restore_duration.clone(),
        );
        r.register_with_unit(
            "changelog_write_duration",
            "Duration of one commit's successful changelog write (between the sink's ack and the store commit)",
            Unit::Seconds,
            self.write_duration.clone(),
        );
        r.register_with_unit(
            "changelog_written",
            "Changelog record bytes produced after sink acks",
            Unit::Bytes,
            self.written_bytes.clone(),
        );
        r.register(
            "changelog_write_retries",
            "Failed changelog writes that are retried (the partition waits meanwhile)",
            self.write_retries.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changelog_metrics_are_per_route() {
        let m = Metrics::new();
        let r = m.route("usage");
        r.changelog.restored_ids.inc_by(7);
        r.changelog.restore_duration.observe(0.5);
        let text = m.encode().unwrap();
        assert!(
            text.contains(r#"tally_changelog_restored_ids_total{route="usage"} 7"#),
            "{text}"
        );
        assert!(
            text.contains(r#"tally_changelog_restore_duration_seconds_count{route="usage"} 1"#),
            "{text}"
        );
        for name in [
            "written_bytes_total",
            "write_retries_total",
            "write_duration_seconds_count",
        ] {
            assert!(
                text.contains(&format!("tally_changelog_{name}")),
                "{name}: {text}"
            );
        }
    }

    #[test]
    fn names_follow_conventions() {
        let m = Metrics::new();
        let r = m.route("usage");
        r.delivered.inc_by(3);
        let p = m.partition("usage", "t", 0);
        p.set_high_watermark(10);
        p.set_committed(4);
        m.observe_sink("file", "ok", 0.002);
        let text = m.encode().unwrap();
        assert!(
            text.contains(r#"tally_records_total{route="usage",outcome="delivered"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(r#"tally_partition_lag{route="usage",topic="t",partition="0"} 6"#),
            "{text}"
        );
        assert!(
            text.contains("tally_sink_request_duration_seconds_bucket"),
            "{text}"
        );
        assert!(text.contains("tally_store_size_bytes"), "{text}");
        for name in [
            "tally_fetch_budget_bytes ",
            "tally_fetch_budget_used_bytes ",
            "tally_fetch_budget_waits_total ",
            "tally_fetch_budget_wait_seconds_total ",
        ] {
            assert!(text.contains(name), "{name}: {text}");
        }
        assert!(text.contains("tally_build_info{"), "{text}");
        assert!(!text.contains("tally_group_"), "static mode: {text}");
        m.remove_partition("usage", "t", 0);
        assert!(!m.encode().unwrap().contains("tally_partition_lag{"));

        let mut m = Metrics::new();
        m.register_group();
        m.group.generation.set(4);
        m.group.rebalances.inc();
        m.group.last_rebalance.set(5.5);
        let text = m.encode().unwrap();
        for line in [
            "tally_group_generation 4",
            "tally_group_rebalances_total 1",
            "tally_group_last_rebalance_duration_seconds 5.5",
            "tally_group_fenced_total 0",
            "tally_group_members 0",
            "tally_group_leader 0",
        ] {
            assert!(text.contains(line), "{line}: {text}");
        }
    }
}
