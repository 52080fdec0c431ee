//! What the running pipeline looks like right now: readiness and per-partition
//! state, for the admin API. Metrics live in `admin::metrics`; this holds the
//! handles plus the few facts that are not numbers.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::RouteCtx;
use crate::admin::metrics::{Metrics, PartitionMetrics};
use crate::admin::views::GroupView;
use crate::store::Store;

/// What a partition worker is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PartitionState {
    Running,
    /// Transient sink failures: backing off and retrying.
    Retrying,
    /// Halt-class sink failure: no progress until an operator acts.
    Halted,
    /// The worker ended (error or shutdown).
    Stopped,
    /// Reading the partition's tracking IDs from the changelog before fetching.
    Restoring,
}

impl PartitionState {
    fn from_u8(v: u8) -> PartitionState {
        match v {
            0 => PartitionState::Running,
            1 => PartitionState::Retrying,
            2 => PartitionState::Halted,
            4 => PartitionState::Restoring,
            _ => PartitionState::Stopped,
        }
    }
}

#[derive(Debug)]
pub struct PartitionLive {
    pub route: Arc<str>,
    pub metrics: PartitionMetrics,
    state: AtomicU8,
}

impl PartitionLive {
    pub fn set_state(&self, s: PartitionState) {
        self.state.store(s as u8, Ordering::Relaxed);
    }

    pub fn state(&self) -> PartitionState {
        PartitionState::from_u8(self.state.load(Ordering::Relaxed))
    }
}

/// One row of `GET /v1/partitions`.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionView {
    pub topic: String,
    pub partition: i32,
    pub route: String,
    pub committed: i64,
    pub high_watermark: i64,
    pub lag: i64,
    pub state: PartitionState,
    pub backoff_seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub broker_connected: bool,
    pub store_ok: bool,
    pub halted_routes: Vec<String>,
}

pub struct Live {
    pub metrics: Arc<Metrics>,
    pub store: Arc<Store>,
    broker_connected: AtomicBool,
    routes: Vec<Arc<RouteCtx>>,
    /// Dedupe keys being delivered right now (workers and admin replays).
    pub(crate) inflight: Arc<super::InFlight>,
    partitions: Mutex<BTreeMap<(String, i32), Arc<PartitionLive>>>,
    /// Group mode: the membership as last seen by the membership task.
    group: Mutex<Option<GroupView>>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live").finish_non_exhaustive()
    }
}

impl Live {
    pub(crate) fn new(
        metrics: Arc<Metrics>,
        store: Arc<Store>,
        routes: Vec<Arc<RouteCtx>>,
    ) -> Live {
        Live {
            metrics,
            store,
            broker_connected: AtomicBool::new(false),
            routes,
            inflight: Arc::default(),
            partitions: Mutex::new(BTreeMap::new()),
            group: Mutex::new(None),
        }
    }

    /// The daemon's routes as a replay sees them: the workers' decoders and sinks.
    pub(crate) fn replay_routes(&self) -> crate::dlq::ReplayRoutes {
        self.routes
            .iter()
            .map(|r| {
                let route = crate::dlq::ReplayRoute {
                    decoder: r.decoder.clone(),
                    sink: Arc::clone(&r.sink),
                    changelog_topic: r.route.changelog_topic.clone(),
                };
                (r.name.to_string(), route)
            })
            .collect()
    }

    pub fn set_broker_connected(&self, up: bool) {
        let was = self.broker_connected.swap(up, Ordering::Relaxed);
        self.metrics.broker_connected.set(i64::from(up));
        if was != up {
            if up {
                tracing::info!("broker connected");
            } else {
                tracing::warn!("broker unreachable: not ready until metadata succeeds again");
            }
        }
    }

    pub(crate) fn register(
        &self,
        route: &Arc<str>,
        topic: &str,
        partition: i32,
    ) -> Arc<PartitionLive> {
        let live = Arc::new(PartitionLive {
            route: Arc::clone(route),
            metrics: self.metrics.partition(route, topic, partition),
            state: AtomicU8::new(PartitionState::Running as u8),
        });
        let mut map = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
        map.insert((topic.to_string(), partition), Arc::clone(&live));
        self.metrics.partitions_assigned.set(map.len() as i64);
        live
    }

    /// A revoked partition: gone from `/v1/partitions` and the metrics
    /// (its new owner reports it).
    pub(crate) fn unregister(&self, topic: &str, partition: i32) {
        let mut map = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = map.remove(&(topic.to_string(), partition)) {
            self.metrics.remove_partition(&p.route, topic, partition);
        }
        self.metrics.partitions_assigned.set(map.len() as i64);
    }

    pub(crate) fn set_group(&self, view: GroupView) {
        let g = &self.metrics.group;
        g.generation.set(i64::from(view.generation));
        g.members.set(view.members.map_or(0, i64::from));
        g.leader.set(i64::from(view.leader));
        *self.group.lock().unwrap_or_else(|e| e.into_inner()) = Some(view);
    }

    /// Group mode only.
    pub fn group(&self) -> Option<GroupView> {
        self.group.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn readiness(&self) -> Readiness {
        let halted_routes: Vec<String> = self
            .routes
            .iter()
            .filter(|r| r.halted.load(Ordering::Relaxed))
            .map(|r| r.name.to_string())
            .collect();
        let broker_connected = self.broker_connected.load(Ordering::Relaxed);
        let store_ok = !self.store.is_failed();
        Readiness {
            ready: broker_connected && store_ok && halted_routes.is_empty(),
            broker_connected,
            store_ok,
            halted_routes,
        }
    }

    pub fn partitions(&self) -> Vec<PartitionView> {
        let map = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
        map.iter()
            .map(|((topic, partition), p)| PartitionView {
                topic: topic.clone(),
                partition: *partition,
                route: p.route.to_string(),
                committed: p.metrics.committed.get(),
                high_watermark: p.metrics.high_watermark.get(),
                lag: p.metrics.lag(),
                state: p.state(),
                backoff_seconds: p.metrics.backoff.get(),
            })
            .collect()
    }

    /// Refresh the store gauges (size on disk walks the directory: on scrape only).
    pub fn refresh_store_gauges(&self) {
        let m = &self.metrics;
        m.store_ids.set(self.store.id_count() as i64);
        match self.store.size_on_disk() {
            Ok(b) => {
                m.store_size.set(b as i64);
            }
            Err(e) => tracing::debug!("store size unknown: {e}"),
        }
        m.store_dead_letters
            .set(self.store.dead_letter_count() as i64);
    }
}
