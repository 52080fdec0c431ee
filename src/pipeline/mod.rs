//! The consume → deliver → commit pipeline.
//!
//! `run` opens the store, builds the sinks, then keeps the set of owned
//! partitions up to date from broker metadata, one worker task per partition.
//! On shutdown (the token), workers stop taking new batches, finish what is
//! in hand within `drain_timeout`, the committer writes what was
//! acknowledged, and the store is flushed.

mod backoff;
mod changelog;
pub mod classify;
mod committer;
mod dlq_topic;
mod fence;
mod fetch_budget;
mod fetcher;
mod group_assign;
mod housekeeping;
mod inflight;
pub mod live;
mod repeats;
mod sink_health;
mod worker;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use backoff::Backoff;
/// For `dlq replay`: check the letters' keys against, and record replayed
/// IDs in, the route's changelog.
pub(crate) use changelog::restore::{Source as ChangelogSource, recorded_keys};
pub(crate) use changelog::writer::produce as produce_changelog;
use committer::Committer;
use fence::Fence;
use fetch_budget::FetchBudget;
/// Public only for benches/ (the pipeline is its sole user).
#[doc(hidden)]
pub use inflight::InFlight;
use worker::PartitionWorker;

pub use live::{Live, PartitionState, PartitionView, Readiness};

use crate::admin::metrics::{Metrics, RouteMetrics};
use crate::admin::{AdminError, AdminServer};

use crate::config::{KafkaSettings, PipelineSettings, Route, Settings};
use crate::format::Decoder;
use crate::kafka::{
    ClusterClient, KafkaConfig, KafkaError, Producer, SecurityError, error_name, load_security,
};

/// Kafka's error code for a topic the broker does not know.
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
use crate::sink::{Sink, SinkSetupError, Sinks};
use crate::store::{Store, StoreConfig, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Sink(#[from] SinkSetupError),
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error(
        "stopped because the store could not commit: {0}. Work delivered after the last \
         commit is re-sent on the next start and absorbed by the sink's idempotency key"
    )]
    StoreFailed(String),
    #[error("background task failed: {0}")]
    Task(String),
    #[error(transparent)]
    KafkaSecurity(#[from] SecurityError),
    /// A Kafka failure that retrying cannot fix (TLS, SASL, protocol).
    #[error("stopped, not retrying")]
    Kafka(#[from] KafkaError),
}

pub(crate) struct RouteCtx {
    pub name: Arc<str>,
    pub route: Route,
    pub decoder: Decoder,
    pub sink: Arc<Sink>,
    /// Counters per route (exported as metrics, logged periodically and at exit).
    pub stats: RouteMetrics,
    /// Set while the sink answers with a halt-class failure.
    pub halted: AtomicBool,
    /// Whether the sink answers at all; shared by the routes using it.
    pub sink_health: Arc<sink_health::SinkHealth>,
}

/// What every partition worker shares.
pub(crate) struct Shared {
    pub store: Arc<Store>,
    pub committer: Committer,
    /// Shared with `Live`, so an admin-API replay reserves keys like a worker.
    pub inflight: Arc<InFlight>,
    pub client: ClusterClient,
    pub pipeline: PipelineSettings,
    pub kafka: KafkaSettings,
    pub cancel: CancellationToken,
    pub live: Arc<Live>,
    /// `[pipeline] fetch_memory_mb`, shared by every partition's fetcher.
    pub fetch_budget: Arc<FetchBudget>,
    failed_partitions: AtomicU64,
    /// For routes with a `dead_letter_topic`.
    pub dead_letter_producer: dlq_topic::DeadLetterProducer,
    /// For routes with a `changelog_topic`; connected on first use.
    producer: tokio::sync::OnceCell<Producer>,
    /// `store.retention`: a restore skips IDs older than this.
    pub retention: Option<Duration>,
    /// Set by the first failed store commit; the daemon then stops with it.
    store_failure: std::sync::Mutex<Option<String>>,
    /// Set by the first Kafka failure that stops the daemon (TLS, SASL).
    kafka_failure: std::sync::Mutex<Option<KafkaError>>,
}

impl Shared {
    /// The store could not record resolved work: stop everything (see
    /// `classify_store`). The first failure is the one reported.
    pub fn store_failed(&self, message: String) {
        let mut slot = self.store_failure.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            tracing::error!(
                "{message}; stopping: nothing more is delivered until the store can write"
            );
            *slot = Some(message);
        }
        self.cancel.cancel();
    }

    /// Kafka refused us for a reason no retry fixes (see
    /// `classify::kafka_failure_stops_daemon`): stop everything and exit
    /// with it, one error line instead of a reconnect loop per partition.
    pub fn kafka_failed(&self, doing: &str, error: KafkaError) {
        let mut slot = self.kafka_failure.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            tracing::error!("{doing}, not retrying: {error}");
            *slot = Some(error);
        }
        self.cancel.cancel();
    }

    pub fn failed_partition(&self) {
        self.failed_partitions.fetch_add(1, Ordering::Relaxed);
    }

    /// The changelog producer, connected on first use.
    pub async fn producer(&self) -> Result<&Producer, KafkaError> {
        self.producer
            .get_or_try_init(|| async { Producer::connect(self.client.config()).await })
            .await
    }
}

/// What `run` reports when it returns.
#[derive(Debug, Default)]
pub struct RunSummary {
    pub delivered: u64,
    pub duplicates: u64,
    pub dead_lettered: u64,
    pub failed_partitions: u64,
}

pub fn store_config(settings: &Settings) -> StoreConfig {
    StoreConfig {
        path: settings.store.path.clone(),
        cache_capacity_bytes: settings.store.cache_capacity_mb * 1024 * 1024,
    }
}

/// Reads the TLS files and the SASL secret: a bad one fails here, named.
pub fn kafka_config(kafka: &KafkaSettings) -> Result<KafkaConfig, SecurityError> {
    let (tls, sasl) = load_security(kafka.tls.as_ref(), kafka.sasl.as_ref())?;
    Ok(KafkaConfig {
        brokers: kafka.brokers.clone(),
        client_id: kafka.client_id.clone(),
        connect_timeout: kafka.connect_timeout,
        request_timeout: kafka.request_timeout,
        tls,
        sasl,
    })
}

/// Run until `cancel` fires. Opening the store and the sinks happens first,
/// so a locked store or an unwritable sink fails fast with its own error.
pub async fn run(
    settings: Settings,
    cancel: CancellationToken,
) -> Result<RunSummary, PipelineError> {
    let kafka = kafka_config(&settings.kafka)?;
    let store_cfg = store_config(&settings);
    let store = tokio::task::spawn_blocking(move || Store::open(&store_cfg))
        .await
        .map_err(|e| PipelineError::Task(e.to_string()))??;
    let store = Arc::new(store);
    tracing::info!(path = %settings.store.path.display(), ids = store.id_count(), "store open");
    let sinks = Sinks::build(&settings)?;
    let mut metrics = Metrics::new();
    if settings.assignment.group().is_some() {
        metrics.register_group();
    }
    let metrics = Arc::new(metrics);

    let mut routes = BTreeMap::new();
    let mut health: BTreeMap<&'static str, Arc<sink_health::SinkHealth>> = BTreeMap::new();
    for route in &settings.routes {
        let sink = sinks
            .get(route.sink)
            .ok_or(SinkSetupError::NotConfigured("route sink"))?;
        let sink_health = Arc::clone(
            health
                .entry(sink.name())
                .or_insert_with(|| Arc::new(sink_health::SinkHealth::new(sink.name(), &metrics))),
        );
        let ctx = Arc::new(RouteCtx {
            name: Arc::from(route.name.as_str()),
            route: route.clone(),
            decoder: Decoder::for_route(route),
            sink,
            stats: metrics.route(&route.name),
            halted: AtomicBool::new(false),
            sink_health,
        });
        for topic in &route.topics {
            routes.insert(topic.clone(), Arc::clone(&ctx));
        }
    }
    let unique_routes: BTreeMap<&str, &Arc<RouteCtx>> =
        routes.values().map(|r| (&*r.name, r)).collect();
    let live = Arc::new(Live::new(
        Arc::clone(&metrics),
        Arc::clone(&store),
        unique_routes.values().map(|r| Arc::clone(r)).collect(),
    ));
    // Bind before consuming anything: a taken port fails the start, not later.
    let admin = match &settings.admin {
        Some(a) => Some(AdminServer::start(a, &settings, Arc::clone(&live)).await?),
        None => None,
    };

    let (committer, commit_task) = Committer::spawn(
        Arc::clone(&store),
        settings.pipeline.commit_group_max,
        metrics.commit_latency.clone(),
    );
    let shared = Arc::new(Shared {
        store: Arc::clone(&store),
        committer,
        inflight: Arc::clone(&live.inflight),
        client: ClusterClient::new(kafka),
        pipeline: settings.pipeline.clone(),
        kafka: settings.kafka.clone(),
        cancel: cancel.clone(),
        live: Arc::clone(&live),
        fetch_budget: FetchBudget::new(
            usize::try_from(settings.pipeline.fetch_memory_mb << 20).unwrap_or(usize::MAX),
            // The window, plus the batch its worker is delivering.
            settings.pipeline.prefetch_batches + 1,
            metrics.fetch_budget.clone(),
        ),
        failed_partitions: AtomicU64::new(0),
        store_failure: std::sync::Mutex::new(None),
        kafka_failure: std::sync::Mutex::new(None),
        dead_letter_producer: dlq_topic::DeadLetterProducer::default(),
        producer: tokio::sync::OnceCell::new(),
        retention: settings.store.retention,
    });
    let housekeeping = tokio::spawn(housekeeping::run(
        Arc::clone(&live),
        settings.store.retention,
        cancel.clone(),
    ));

    let mut workers = JoinSet::new();
    match settings.assignment.group() {
        // Drains, mirrors offsets and leaves the group itself before returning.
        Some(group) => group_assign::run(&settings, group, &shared, &routes, &mut workers).await,
        None => assign_loop(&settings, &shared, &routes, &mut workers).await,
    }

    // Drain: workers finish the batch in hand, then stop.
    let drain = tokio::time::timeout(settings.pipeline.drain_timeout, async {
        while workers.join_next().await.is_some() {}
    })
    .await;
    if drain.is_err() {
        tracing::warn!(
            timeout = ?settings.pipeline.drain_timeout,
            "drain timeout: abandoning deliveries still in progress (they are re-sent on the next start)"
        );
        workers.abort_all();
        while workers.join_next().await.is_some() {}
    }
    let failed_partitions = shared.failed_partitions.load(Ordering::Relaxed);
    let store_failure = shared
        .store_failure
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    let fatal = shared
        .kafka_failure
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    drop(shared); // last committer handle goes with it
    let _ = commit_task.await;
    let _ = housekeeping.await;
    if let Some(admin) = admin {
        admin.stop().await;
    }
    drop(live);
    if let Some(message) = store_failure {
        return Err(PipelineError::StoreFailed(message));
    }
    // A clean stop: flush, then the index snapshot the next start loads.
    tokio::task::spawn_blocking(move || store.close())
        .await
        .map_err(|e| PipelineError::Task(e.to_string()))??;
    if let Some(e) = fatal {
        return Err(e.into());
    }

    let mut summary = RunSummary {
        failed_partitions,
        ..RunSummary::default()
    };
    let unique: BTreeMap<&str, &Arc<RouteCtx>> = routes.values().map(|r| (&*r.name, r)).collect();
    for ctx in unique.values() {
        let s = &ctx.stats;
        summary.delivered += s.delivered.get();
        summary.duplicates += s.duplicates.get();
        summary.dead_lettered += s.dead_lettered.get();
        log_stats(ctx);
    }
    Ok(summary)
}

/// Keep one worker per owned partition, refreshing metadata periodically so
/// new partitions are picked up. Returns when `cancel` fires — also when the
/// brokers cannot be reached for a reason retrying will not fix (TLS, SASL):
/// then it has recorded the error in `shared` and cancelled the run itself.
async fn assign_loop(
    settings: &Settings,
    shared: &Arc<Shared>,
    routes: &BTreeMap<String, Arc<RouteCtx>>,
    workers: &mut JoinSet<(String, i32)>,
) {
    let topics = settings.all_topics();
    let mut running: BTreeSet<(String, i32)> = BTreeSet::new();
    let mut backoff = Backoff::new(
        settings.pipeline.retry_initial,
        settings.kafka.metadata_refresh,
    );
    let mut last_stats = tokio::time::Instant::now();
    loop {
        let next_refresh = match shared.client.metadata(&topics).await {
            Ok(md) => {
                backoff.reset();
                shared.live.set_broker_connected(true);
                for topic in &topics {
                    let Some(ctx) = routes.get(topic) else {
                        continue;
                    };
                    match md.topics.get(topic) {
                        Some(tm) if tm.error.is_none() => {
                            for &partition in tm.partitions.keys() {
                                let key = (topic.clone(), partition);
                                if settings.assignment.owns(topic, partition) != Some(true)
                                    || running.contains(&key)
                                {
                                    continue;
                                }
                                running.insert(key.clone());
                                let live = shared.live.register(&ctx.name, topic, partition);
                                let worker = PartitionWorker {
                                    shared: Arc::clone(shared),
                                    live,
                                    route: Arc::clone(ctx),
                                    topic: Arc::from(topic.as_str()),
                                    partition,
                                    stop: shared.cancel.child_token(),
                                    fence: Fence::open(),
                                    group_committed: None,
                                };
                                workers.spawn(async move {
                                    worker.run().await;
                                    key
                                });
                            }
                        }
                        tm => warn_topic_unusable(topic, tm),
                    }
                }
                settings.kafka.metadata_refresh
            }
            Err(e) if classify::classify_kafka(&e) == classify::FailureClass::Halt => {
                shared.live.set_broker_connected(false);
                shared.kafka_failed("cannot fetch metadata", e);
                return;
            }
            Err(e) => {
                shared.live.set_broker_connected(false);
                let delay = backoff.next_delay();
                tracing::warn!(retry_in = ?delay, "cannot fetch metadata: {e}");
                delay
            }
        };
        // Reap workers that ended on their own (e.g. a failed partition); they
        // are not restarted until the next process start.
        while let Some(done) = workers.try_join_next() {
            if let Err(e) = done {
                tracing::error!("partition worker crashed: {e}");
            }
        }
        if last_stats.elapsed() >= Duration::from_secs(30) {
            last_stats = tokio::time::Instant::now();
            let unique: BTreeMap<&str, &Arc<RouteCtx>> =
                routes.values().map(|r| (&*r.name, r)).collect();
            unique.values().for_each(|ctx| log_stats(ctx));
        }
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            _ = tokio::time::sleep(next_refresh.min(Duration::from_secs(30))) => {}
        }
    }
}

/// Why a routed topic cannot be consumed yet (retried at the next refresh).
fn warn_topic_unusable(topic: &str, tm: Option<&crate::kafka::TopicMetadata>) {
    match tm.and_then(|t| t.error) {
        Some(code) if code != UNKNOWN_TOPIC_OR_PARTITION => tracing::warn!(
            topic,
            "topic metadata error {}; retrying at the next metadata refresh",
            error_name(code)
        ),
        _ => tracing::warn!(
            topic,
            "topic not found on the broker; retrying at the next metadata refresh"
        ),
    }
}

fn log_stats(ctx: &RouteCtx) {
    let s = &ctx.stats;
    tracing::info!(
        route = %ctx.name,
        delivered = s.delivered.get(),
        duplicates = s.duplicates.get(),
        dead_lettered = s.dead_lettered.get(),
        retries = s.retried.get(),
        "route totals"
    );
}
