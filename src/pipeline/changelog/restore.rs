//! Restore, before a partition worker fetches: read the partition's
//! changelog from the store's position to the high watermark and apply it
//! (see the module above for why and what).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::STEP_IDS;
use super::record::{self, ChangelogRecord};
use crate::kafka::{
    ClusterClient, ConsumedRecord, ErrorKind, KafkaError, OffsetSpec, PartitionConsumer,
};
use crate::pipeline::backoff::Backoff;
use crate::pipeline::classify::{FailureClass, classify_kafka, kafka_failure_stops_daemon};
use crate::pipeline::fetch_budget::MIN_FETCH_BYTES;
use crate::pipeline::live::{PartitionLive, PartitionState};
use crate::pipeline::{RouteCtx, Shared};
use crate::store::{ChangelogMark, ChangelogRestore, CommitBatch, digest};

/// Most bytes asked for per changelog fetch: restores read as fast as the
/// broker serves, within the fetch budget's share (see `attempt`).
const FETCH_BYTES: usize = 8 << 20;
/// The least a changelog fetch reserves: one record batch as tally's
/// writer produces it (one produce request, plus framing). Kafka returns
/// at least one whole batch however little is asked for, so reserving
/// less would let many partitions' first fetches land far over the budget.
const BATCH_BYTES: usize = record::REQUEST_MAX_BYTES + (64 << 10);
/// Fetches in a row that may return nothing below the high watermark.
const MAX_IDLE_FETCHES: u32 = 5;
/// A long restore says how far it got this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// One partition's restore.
pub(crate) struct Restore<'a> {
    pub shared: &'a Arc<Shared>,
    pub live: &'a PartitionLive,
    pub route: &'a RouteCtx,
    pub changelog_topic: &'a str,
    pub topic: &'a str,
    pub partition: i32,
    pub stop: &'a CancellationToken,
}

/// What a restore read and applied.
#[derive(Debug, Default, Clone)]
struct Totals {
    from: i64,
    to: i64,
    records: u64,
    /// Value bytes of those records.
    bytes: u64,
    /// IDs read for this partition (already held ones included).
    ids: u64,
    /// IDs the store did not hold yet.
    new_ids: u64,
    /// IDs of records older than `store.retention`, not restored.
    expired_ids: u64,
    /// Records of other topics (a multi-topic route) or routes, and values
    /// that are not changelog records.
    other_records: u64,
    /// The partition offset the records prove delivered.
    next_offset: Option<i64>,
}

enum Failure {
    Stopped,
    /// Retried with backoff: the topic's existence or size.
    Retry(String),
    /// Classified by `classify_kafka`: transient ones are retried with
    /// backoff, a refused TLS/SASL identity stops the daemon (as the
    /// fetcher does), other halts retry at `retry_max` pace.
    Kafka(KafkaError),
    /// A record this tally cannot read, or the store refused the write:
    /// starting anyway could deliver what was delivered before.
    Fatal(String),
}

impl From<KafkaError> for Failure {
    fn from(e: KafkaError) -> Self {
        Failure::Kafka(e)
    }
}

impl Restore<'_> {
    /// Restore until done. False when the partition must not start: shutdown
    /// or revocation came first, or the restore cannot be completed safely.
    pub async fn run(self) -> bool {
        self.live.set_state(PartitionState::Restoring);
        let started = Instant::now();
        let mut backoff = Backoff::new(
            self.shared.pipeline.retry_initial,
            self.shared.pipeline.retry_max,
        );
        let mut totals = Totals::default();
        let mut first_attempt = true;
        // A restoring partition counts for the budget's per-fetch share.
        let _member = self.shared.fetch_budget.join();
        loop {
            match self.attempt(&mut totals, first_attempt).await {
                Ok(()) => break,
                Err(Failure::Stopped) => return false,
                Err(Failure::Fatal(reason)) => {
                    tracing::error!(
                        route = %self.route.name, topic = self.topic, partition = self.partition,
                        changelog_topic = self.changelog_topic,
                        "cannot restore from the changelog; this partition stays stopped \
                         (nothing is delivered from it until this is fixed and tally restarted): {reason}"
                    );
                    self.live.set_state(PartitionState::Stopped);
                    self.shared.failed_partition();
                    return false;
                }
                Err(Failure::Kafka(e)) if classify_kafka(&e) == FailureClass::Halt => {
                    if kafka_failure_stops_daemon(&e) {
                        let doing = format!(
                            "cannot restore {}/{} from changelog topic {}",
                            self.topic, self.partition, self.changelog_topic
                        );
                        self.shared.kafka_failed(&doing, e);
                        return false;
                    }
                    first_attempt = false;
                    let delay = self.shared.pipeline.retry_max;
                    self.live.set_state(PartitionState::Halted);
                    tracing::error!(
                        route = %self.route.name, topic = self.topic, partition = self.partition,
                        changelog_topic = self.changelog_topic, retry_in = ?delay,
                        "changelog restore halted, the partition does not consume: {e}"
                    );
                    tokio::select! {
                        _ = self.stop.cancelled() => return false,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    self.live.set_state(PartitionState::Restoring);
                }
                Err(Failure::Kafka(e)) => {
                    first_attempt = false;
                    self.wait(&mut backoff, &e.to_string()).await;
                    if self.stop.is_cancelled() {
                        return false;
                    }
                }
                Err(Failure::Retry(reason)) => {
                    first_attempt = false;
                    self.wait(&mut backoff, &reason).await;
                    if self.stop.is_cancelled() {
                        return false;
                    }
                }
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        let stats = &self.route.stats.changelog;
        stats.restore_duration.observe(seconds);
        self.live.metrics.backoff.set(0.0);
        tracing::info!(
            route = %self.route.name, topic = self.topic, partition = self.partition,
            changelog_topic = self.changelog_topic, from = totals.from, to = totals.to,
            records = totals.records, bytes = totals.bytes, ids = totals.ids, new_ids = totals.new_ids,
            expired_ids = totals.expired_ids, other_records = totals.other_records,
            offset = ?totals.next_offset, seconds = format!("{seconds:.3}"),
            ids_per_s = (totals.ids as f64 / seconds.max(1e-9)) as u64,
            "restored tracking IDs from the changelog"
        );
        self.live.set_state(PartitionState::Running);
        true
    }

    /// One pass from the store's position to the high watermark. Each step
    /// is committed, so a retry continues where the last one stopped.
    ///
    /// Fetches take from the process-wide fetch budget like the fetchers'
    /// (same queue, same share), and so does the step being collected
    /// until it is applied (at `STEP_IDS`, or at the partition's share of
    /// the budget). A restore that would have to wait for budget bytes
    /// applies its step first: it never waits while holding bytes, so
    /// restores and fetchers cannot wait on each other.
    async fn attempt(&self, totals: &mut Totals, first: bool) -> Result<(), Failure> {
        self.check_topic().await?;
        let src = self.source();
        let mut log = src.open(self.position().await?).await?;
        if first {
            totals.from = log.offset;
        }
        let budget = &self.shared.fetch_budget;
        let mut step = self.step();
        let mut step_hold = budget.charge(0);
        let mut step_bytes = 0usize;
        let mut last_progress = Instant::now();
        loop {
            let ask = budget
                .fetch_size()
                .clamp(MIN_FETCH_BYTES, FETCH_BYTES)
                .max(BATCH_BYTES);
            let mut hold = match budget.try_reserve(ask) {
                Some(hold) => hold,
                None => {
                    if !step.batches.is_empty() {
                        self.apply(&mut step, log.offset, totals).await?;
                        step_hold.resize(0);
                        step_bytes = 0;
                    }
                    self.cancellable(budget.reserve(ask)).await?
                }
            };
            let Some((records, charged)) = log.next(&src, ask).await? else {
                break;
            };
            hold.resize(charged);
            for r in &records {
                match src.decode(r)? {
                    Some(rec) => {
                        let bytes = r.value.as_ref().map_or(0, |v| v.len());
                        step_bytes += self.take(rec, bytes, &mut step, totals);
                    }
                    None => totals.other_records += 1,
                }
            }
            step_hold.resize(step_bytes);
            // The fetched records are gone from here on; the step holds the IDs.
            drop((records, hold));
            // A step grows to the partition's share of the budget at most:
            // applying it copies it once more (store staging), outside the budget.
            if step_bytes >= budget.partition_share()
                || step.batches.iter().map(|b| b.keys.len()).sum::<usize>() >= STEP_IDS
            {
                self.apply(&mut step, log.offset, totals).await?;
                step_hold.resize(0);
                step_bytes = 0;
            }
            if last_progress.elapsed() >= PROGRESS_EVERY {
                last_progress = Instant::now();
                tracing::info!(
                    route = %self.route.name, topic = self.topic, partition = self.partition,
                    changelog_topic = self.changelog_topic, offset = log.offset,
                    high_watermark = log.target, ids = totals.ids, "restoring from the changelog"
                );
            }
        }
        // Always written, even with no records: the position it establishes
        // is what later commits move forward.
        self.apply(&mut step, log.offset, totals).await?;
        drop(step_hold);
        totals.to = log.offset;
        Ok(())
    }

    /// Add one decoded record to the current step; returns the bytes the
    /// step holds for it.
    fn take(
        &self,
        rec: ChangelogRecord,
        bytes: usize,
        step: &mut ChangelogRestore,
        totals: &mut Totals,
    ) -> usize {
        if rec.topic != self.topic
            || rec.partition != self.partition
            || *rec.route != *self.route.name
        {
            totals.other_records += 1;
            return 0;
        }
        totals.records += 1;
        totals.bytes += bytes as u64;
        self.route.stats.changelog.restored_records.inc();
        if rec.is_final {
            totals.next_offset = totals.next_offset.max(Some(rec.next_offset));
            step.next_offset = step.next_offset.max(Some(rec.next_offset));
        }
        let expired = self.shared.retention.is_some_and(|age| {
            let age_ms = age.as_millis().min(i64::MAX as u128) as i64;
            rec.committed_at_ms < crate::store::now_ms().saturating_sub(age_ms)
        });
        if expired {
            totals.expired_ids += rec.keys.len() as u64;
            return 0;
        }
        totals.ids += rec.keys.len() as u64;
        self.route
            .stats
            .changelog
            .restored_ids
            .inc_by(rec.keys.len() as u64);
        let digests = rec.keys.iter().map(|k| digest(&rec.route, k)).collect();
        let held = ids_cost(&rec.keys);
        step.batches.push(CommitBatch {
            route: rec.route,
            topic: rec.topic,
            partition: rec.partition,
            first_offset: rec.first_offset,
            next_offset: rec.next_offset,
            keys: rec.keys,
            digests,
            dead_letters: Vec::new(),
            changelog: None,
        });
        step.committed_at_ms.push(rec.committed_at_ms);
        held
    }

    /// Commit the step with the changelog position `next_offset`; start a new one.
    async fn apply(
        &self,
        step: &mut ChangelogRestore,
        next_offset: i64,
        totals: &mut Totals,
    ) -> Result<(), Failure> {
        step.mark.next_offset = next_offset;
        let done = std::mem::replace(step, self.step());
        let store = Arc::clone(&self.shared.store);
        let applied = tokio::task::spawn_blocking(move || store.restore_changelog(&done))
            .await
            .map_err(|e| Failure::Fatal(format!("restore task failed: {e}")))?;
        match applied {
            Ok(stats) => {
                totals.new_ids += stats.ids_written as u64;
                Ok(())
            }
            Err(e) => {
                let message = format!(
                    "{e} (while restoring {}/{} from the changelog)",
                    self.topic, self.partition
                );
                self.shared.store_failed(message.clone());
                Err(Failure::Fatal(message))
            }
        }
    }

    /// Back off before the next attempt, saying why the partition waits.
    async fn wait(&self, backoff: &mut Backoff, reason: &str) {
        let delay = backoff.next_delay();
        self.live.metrics.backoff.set(delay.as_secs_f64());
        tracing::warn!(
            route = %self.route.name, topic = self.topic, partition = self.partition,
            changelog_topic = self.changelog_topic, retry_in = ?delay,
            attempt = backoff.attempts(),
            "changelog restore waiting; the partition does not consume until it is done: {reason}"
        );
        tokio::select! {
            _ = self.stop.cancelled() => {}
            _ = tokio::time::sleep(delay) => {}
        }
    }

    fn step(&self) -> ChangelogRestore {
        ChangelogRestore {
            route: self.route.name.to_string(),
            topic: self.topic.to_string(),
            partition: self.partition,
            mark: ChangelogMark {
                topic: self.changelog_topic.to_string(),
                next_offset: 0,
            },
            ..ChangelogRestore::default()
        }
    }

    /// The changelog must exist and have a partition for every source partition.
    async fn check_topic(&self) -> Result<(), Failure> {
        let topics = [self.changelog_topic.to_string(), self.topic.to_string()];
        let md = self
            .cancellable(self.shared.client.metadata(&topics))
            .await??;
        let count = |t: &str| {
            md.topics
                .get(t)
                .filter(|m| m.error.is_none())
                .map(|m| m.partitions.len())
        };
        let source = count(self.topic).unwrap_or(0);
        match count(self.changelog_topic) {
            None => Err(Failure::Retry(format!(
                "changelog topic {} does not exist; create it with at least {source} partitions \
                 (as many as {}), cleanup.policy=delete and retention.ms no shorter than store.retention",
                self.changelog_topic, self.topic
            ))),
            Some(n) if n < source => Err(Failure::Retry(format!(
                "changelog topic {} has {n} partitions but source topic {} has {source}: each source \
                 partition records into the changelog partition of the same number; add partitions \
                 to {} (at least {source})",
                self.changelog_topic, self.topic, self.changelog_topic
            ))),
            Some(_) => Ok(()),
        }
    }

    /// Where this store's restore of the partition stopped, if in this changelog topic.
    async fn position(&self) -> Result<Option<i64>, Failure> {
        let store = Arc::clone(&self.shared.store);
        let (topic, partition) = (self.topic.to_string(), self.partition);
        let mark = tokio::task::spawn_blocking(move || store.changelog_position(&topic, partition))
            .await
            .map_err(|e| Failure::Fatal(format!("position lookup failed: {e}")))?
            .map_err(|e| Failure::Fatal(e.to_string()))?;
        Ok(mark
            .filter(|m| m.topic == self.changelog_topic)
            .map(|m| m.next_offset))
    }

    fn source(&self) -> Source<'_> {
        Source {
            client: &self.shared.client,
            route: &self.route.name,
            changelog_topic: self.changelog_topic,
            topic: self.topic,
            partition: self.partition,
            stop: self.stop,
        }
    }

    async fn cancellable<T>(
        &self,
        fut: impl std::future::Future<Output = T>,
    ) -> Result<T, Failure> {
        self.source().cancellable(fut).await
    }
}

/// What one commit's IDs cost in a step: the keys, their digests, the batch.
fn ids_cost(keys: &[String]) -> usize {
    let per_key = size_of::<String>() + size_of::<u128>();
    keys.iter().map(|k| k.capacity() + per_key).sum::<usize>()
        + size_of::<CommitBatch>()
        + size_of::<i64>()
}

/// Which of `keys` the changelog records as delivered for `src`'s route and
/// source partition, reading from `from` (None: the log start) to the high
/// watermark; nothing is written. For `dlq replay`: its store has not read
/// what another member or store recorded for the partition since (in group
/// mode the member holding a letter rarely still owns its partition).
pub(crate) async fn recorded_keys(
    src: &Source<'_>,
    from: Option<i64>,
    keys: &HashSet<String>,
) -> Result<HashSet<String>, String> {
    let failed = |f: Failure| match f {
        Failure::Stopped => "stopped".to_string(),
        Failure::Retry(reason) | Failure::Fatal(reason) => reason,
        Failure::Kafka(e) => e.to_string(),
    };
    let mut log = src.open(from).await.map_err(failed)?;
    let mut found = HashSet::new();
    while let Some((records, _)) = log.next(src, FETCH_BYTES).await.map_err(failed)? {
        for r in &records {
            let Some(rec) = src.decode(r).map_err(failed)? else {
                continue;
            };
            if rec.topic == src.topic && rec.partition == src.partition && rec.route == src.route {
                found.extend(rec.keys.into_iter().filter(|k| keys.contains(k)));
            }
        }
    }
    Ok(found)
}

/// One source partition's changelog, as read by a restore (or checked by a
/// `dlq replay`): where it is, and what stops the reading.
pub(crate) struct Source<'a> {
    pub client: &'a ClusterClient,
    pub route: &'a str,
    pub changelog_topic: &'a str,
    pub topic: &'a str,
    pub partition: i32,
    pub stop: &'a CancellationToken,
}

/// A changelog partition read from a start offset to the high watermark of
/// the first fetch (what later writers add is not waited for).
struct LogReader {
    consumer: PartitionConsumer,
    /// The next offset to read; everything below it has been returned.
    offset: i64,
    target: Option<i64>,
    idle: u32,
}

impl LogReader {
    /// The next records and what they occupy in memory (record data and
    /// structs), asking for at most `max_bytes`; None once the high
    /// watermark is reached.
    async fn next(
        &mut self,
        src: &Source<'_>,
        max_bytes: usize,
    ) -> Result<Option<(Vec<ConsumedRecord>, usize)>, Failure> {
        let max_bytes = i32::try_from(max_bytes).unwrap_or(i32::MAX);
        loop {
            if self.target.is_some_and(|t| self.offset >= t) {
                return Ok(None);
            }
            let fetched = src
                .cancellable(
                    self.consumer
                        .fetch(self.offset, max_bytes, Duration::from_millis(50)),
                )
                .await?;
            let f = match fetched {
                Ok(f) => f,
                Err(e) if e.kind() == ErrorKind::OffsetOutOfRange => {
                    self.offset = src.out_of_range(&mut self.consumer, self.offset).await?;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let end = *self.target.get_or_insert(f.high_watermark);
            if end < self.offset {
                // Brokers that answer a fetch past the end with nothing.
                self.offset = src.out_of_range(&mut self.consumer, self.offset).await?;
                continue;
            }
            if f.next_offset <= self.offset && f.records.is_empty() {
                if self.offset >= end {
                    return Ok(None);
                }
                self.idle += 1;
                if self.idle >= MAX_IDLE_FETCHES {
                    return Err(Failure::Retry(format!(
                        "fetching changelog offset {} returned nothing below the high watermark {end}",
                        self.offset
                    )));
                }
                continue;
            }
            self.idle = 0;
            self.offset = f.next_offset.max(self.offset);
            let bytes = f.bytes + f.records.capacity() * size_of::<ConsumedRecord>();
            return Ok(Some((f.records, bytes)));
        }
    }
}

impl Source<'_> {
    /// A reader from `from` (None: the changelog's log start).
    async fn open(&self, from: Option<i64>) -> Result<LogReader, Failure> {
        let mut consumer = self
            .client
            .partition_consumer(self.changelog_topic, self.partition);
        let offset = match from {
            Some(at) => at,
            None => {
                self.cancellable(consumer.list_offset(OffsetSpec::Earliest))
                    .await??
            }
        };
        Ok(LogReader {
            consumer,
            offset,
            target: None,
            idle: 0,
        })
    }

    /// A changelog record of any source partition; None for a value that is
    /// not one (null, or without the `TLCL` prefix). One this tally cannot
    /// read is fatal: skipping it could re-deliver what it records.
    fn decode(&self, r: &ConsumedRecord) -> Result<Option<ChangelogRecord>, Failure> {
        let Some(value) = r.value.as_deref() else {
            return Ok(None);
        };
        record::decode(value).map_err(|e| {
            Failure::Fatal(format!(
                "record at {}/{} offset {}: {e}",
                self.changelog_topic, self.partition, r.offset
            ))
        })
    }

    /// The changelog no longer has `offset`: its retention deleted records
    /// this store never applied, or the topic was recreated (the position
    /// lies past its end). Restore from what is there.
    async fn out_of_range(
        &self,
        consumer: &mut PartitionConsumer,
        offset: i64,
    ) -> Result<i64, Failure> {
        let earliest = self
            .cancellable(consumer.list_offset(OffsetSpec::Earliest))
            .await??;
        if earliest <= offset {
            tracing::warn!(
                route = self.route,
                topic = self.topic,
                partition = self.partition,
                changelog_topic = self.changelog_topic,
                position = offset,
                log_start = earliest,
                "the store's changelog position lies past the changelog's end (was the topic \
                 recreated?); restoring from its beginning"
            );
            return Ok(earliest);
        }
        tracing::warn!(
            route = self.route,
            topic = self.topic,
            partition = self.partition,
            changelog_topic = self.changelog_topic,
            position = offset,
            log_start = earliest,
            "changelog records between the store's position and the log start were deleted by \
             the topic's retention before this store applied them; restoring from the log start \
             (keep the changelog's retention.ms longer than store.retention)"
        );
        Ok(earliest)
    }

    async fn cancellable<T>(
        &self,
        fut: impl std::future::Future<Output = T>,
    ) -> Result<T, Failure> {
        tokio::select! {
            biased;
            _ = self.stop.cancelled() => Err(Failure::Stopped),
            v = fut => Ok(v),
        }
    }
}
