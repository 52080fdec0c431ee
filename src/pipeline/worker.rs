//! The partition worker: decode → dedupe → deliver → commit, in offset order.
//!
//! Each fetched batch is resolved in rounds. A round sends every record whose
//! key is new and not held by another delivery, waits for the sink, then
//! commits the delivered keys, the dead letters, and the offset up to the
//! first record still unresolved — in one store transaction, after the ack.
//! A record whose key an earlier record of the round holds (a repeat) is a
//! duplicate once that record is delivered or found stored, and is settled
//! in the same commit (see `repeats`). Records whose key is in flight on
//! another partition, and repeats of a record that failed, go to the next
//! round, where the index tells whether they are now duplicates.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use chrono::Utc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use super::changelog::{restore::Restore, writer};
use super::classify::{FailureClass, classify_decode, classify_sink, classify_store};
use super::fence::Fence;
use super::fetcher::{Fetched, Fetcher, resolve_position};
use super::live::{PartitionLive, PartitionState};
use super::repeats::FewDigests;
use super::{RouteCtx, Shared};
use crate::kafka::ConsumedRecord;
use crate::sink::Outgoing;
use crate::store::{CommitBatch, DeadLetter, digest};

pub(super) struct PartitionWorker {
    pub shared: Arc<Shared>,
    pub live: Arc<PartitionLive>,
    pub route: Arc<RouteCtx>,
    pub topic: Arc<str>,
    pub partition: i32,
    /// Stops this partition only: a child of the shutdown token, so that
    /// one partition can be stopped (revoked) while the others run on.
    pub stop: CancellationToken,
    /// No sink call starts once this closes (group mode: the session may
    /// be over and another member may own the partition).
    pub fence: Fence,
    /// Group mode: the group's committed offset when this member took the
    /// partition over (None: the group has none, or static mode).
    pub group_committed: Option<i64>,
}

/// A decoded record waiting to be resolved. Pendings stay where they are
/// for the whole chunk; rounds pass indices around, not the records.
/// What a decoded record costs while its chunk is resolved: the fetcher
/// charges it to the fetch budget with the batch (with a Kill Bill usage
/// event's box, which only those routes fill, counted for every route).
pub(super) const DECODED_RECORD_BYTES: usize =
    size_of::<Pending>() + size_of::<crate::format::UsageEvent>();

struct Pending {
    out: Outgoing,
    digest: Option<u128>,
    /// Index of the fetched record in the chunk (for a dead letter).
    record: usize,
}

/// What one round sends, and what it holds back for the next.
struct Round {
    /// Indices into the chunk's pendings, in offset order.
    send: Vec<usize>,
    /// Held because another partition's delivery holds the key: the next
    /// round waits for it first.
    held: Vec<usize>,
    /// Held behind an earlier record of this round with the same key (see
    /// `repeats`): settled by this round unless that record fails.
    repeats: Vec<usize>,
    /// The digests this round holds in the in-flight set.
    reserved: Vec<u128>,
    /// The digests this round found already stored (duplicates).
    stored: Vec<u128>,
}

enum Delivery {
    Done,
    /// Stopped (shutdown or revoked) while the sink was failing, or fenced:
    /// nothing of this round is committed; the records are fetched and sent
    /// again by the partition's next owner.
    Abandoned,
}

impl PartitionWorker {
    pub async fn run(self) {
        let shared = Arc::clone(&self.shared);
        // The partition's dedupe state first: nothing is fetched before the
        // IDs its earlier owner (or this host's lost store) delivered are here.
        if let Some(changelog_topic) = self.route.route.changelog_topic.as_deref() {
            let restore = Restore {
                shared: &shared,
                live: &self.live,
                route: &self.route,
                changelog_topic,
                topic: &self.topic,
                partition: self.partition,
                stop: &self.stop,
            };
            if !restore.run().await {
                self.live.set_state(PartitionState::Stopped);
                return;
            }
        }
        let mut consumer = shared
            .client
            .partition_consumer(&self.topic, self.partition);
        let Some(start) = self.start_offset(&mut consumer).await else {
            return;
        };
        self.live.metrics.set_committed(start);
        tracing::info!(route = %self.route.name, topic = %self.topic, partition = self.partition, offset = start, "partition assigned");
        let (tx, mut rx) = mpsc::channel(shared.pipeline.prefetch_batches);
        let fetcher = Fetcher {
            shared: Arc::clone(&shared),
            consumer,
            topic: Arc::clone(&self.topic),
            partition: self.partition,
            on_out_of_range: self.route.route.on_out_of_range,
            metrics: self.live.metrics.clone(),
            live: Arc::clone(&self.live),
            stop: self.stop.clone(),
        };
        let fetch_task = tokio::spawn(fetcher.run(start, tx));
        loop {
            let batch = tokio::select! {
                biased;
                _ = self.stop.cancelled() => break,
                b = rx.recv() => match b { Some(b) => b, None => break },
            };
            if let Delivery::Abandoned = self.resolve_batch(batch).await {
                break;
            }
        }
        fetch_task.abort();
        self.live.set_state(PartitionState::Stopped);
    }

    /// The committed offset — or in group mode the group's, when another
    /// member got further — else the route's start position. A start that
    /// is not the stored offset is persisted at once, so that a crash before
    /// the first delivery cannot move it (`latest`, or back to the store's).
    async fn start_offset(&self, consumer: &mut crate::kafka::PartitionConsumer) -> Option<i64> {
        let store = Arc::clone(&self.shared.store);
        let (topic, partition) = (self.topic.to_string(), self.partition);
        let stored = tokio::task::spawn_blocking(move || store.offset(&topic, partition)).await;
        let local = match stored {
            Ok(Ok(entry)) => entry.map(|e| e.next_offset),
            Ok(Err(e)) => {
                tracing::error!(topic = %self.topic, partition = self.partition, "cannot read committed offset: {e}");
                self.shared.failed_partition();
                return None;
            }
            Err(e) => {
                tracing::error!("offset lookup task failed: {e}");
                return None;
            }
        };
        let (topic, partition) = (&self.topic, self.partition);
        let offset = match (local, self.group_committed) {
            (Some(local), Some(group)) if group > local => {
                tracing::info!(%topic, partition, local, group, source = "group",
                    "the group's committed offset is newer than this store's: another member delivered up to it");
                group
            }
            (Some(local), group) => {
                if let Some(group) = group {
                    tracing::info!(%topic, partition, local, group, source = "store",
                        "this store's offset is at or past the group's committed offset");
                }
                return Some(local);
            }
            (None, Some(group)) => {
                tracing::info!(%topic, partition, group, source = "group",
                    "no offset in this store: starting from the group's committed offset");
                group
            }
            (None, None) => {
                resolve_position(
                    &self.shared,
                    &self.stop,
                    consumer,
                    self.route.route.start,
                    &self.topic,
                    self.partition,
                )
                .await?
            }
        };
        let batch = self.commit_batch(offset, offset, Vec::new(), Vec::new());
        self.commit_or_stop(batch).await.then_some(offset)
    }

    async fn resolve_batch(&self, batch: Fetched) -> Delivery {
        tracing::debug!(
            topic = %self.topic, partition = self.partition, first = batch.first_offset,
            next = batch.next_offset, records = batch.records.len(),
            lag = (batch.high_watermark - batch.next_offset).max(0), "fetched"
        );
        let mut rest = batch.records;
        let mut first = batch.first_offset;
        let max = self.shared.pipeline.max_batch_records;
        while !rest.is_empty() {
            let tail = if rest.len() > max {
                rest.split_off(max)
            } else {
                Vec::new()
            };
            let next = tail.first().map_or(batch.next_offset, |r| r.offset);
            if let Delivery::Abandoned = self.resolve_chunk(rest, first, next).await {
                return Delivery::Abandoned;
            }
            rest = tail;
            first = next;
        }
        if first < batch.next_offset {
            // Only control records or aborted transactions remained: still move the offset.
            let commit = self.commit_batch(first, batch.next_offset, Vec::new(), Vec::new());
            if !self.commit_or_stop(commit).await {
                return Delivery::Abandoned;
            }
        }
        Delivery::Done
    }

    async fn resolve_chunk(
        &self,
        mut records: Vec<ConsumedRecord>,
        first_offset: i64,
        next_offset: i64,
    ) -> Delivery {
        let stats = &self.route.stats;
        let now = Utc::now();
        let mut dead = Vec::new();
        let mut pending = Vec::with_capacity(records.len());
        for (index, record) in records.iter_mut().enumerate() {
            match self
                .route
                .decoder
                .decode(record.key.as_ref(), record.value.as_ref())
            {
                Ok(decoded) => {
                    let digest = decoded
                        .dedupe_key
                        .as_deref()
                        .map(|k| digest(&self.route.name, k));
                    let out = Outgoing {
                        route: Arc::clone(&self.route.name),
                        topic: Arc::clone(&self.topic),
                        partition: self.partition,
                        offset: record.offset,
                        // Moved, not cloned (a refcount round trip on the
                        // fetched buffer per record): a dead letter of a
                        // delivered record takes its key from here.
                        key: record.key.take(),
                        dedupe_key: decoded.dedupe_key,
                        event: decoded.event,
                        usage: decoded.usage.map(Box::new),
                        received_at: now,
                    };
                    pending.push(Pending {
                        out,
                        digest,
                        record: index,
                    });
                }
                Err(e) => {
                    stats.dead_lettered.inc();
                    tracing::warn!(
                        route = %self.route.name, topic = %self.topic, partition = self.partition,
                        offset = record.offset, class = classify_decode(&e).as_str(),
                        "undecodable record skipped (kept in dead letters): {e}"
                    );
                    let key = record.key.as_ref();
                    dead.push(self.dead_letter(record, key, e.to_string(), "decode", 1));
                }
            }
        }

        let mut waiting: Vec<usize> = (0..pending.len()).collect();
        let mut round_first = first_offset;
        loop {
            let round = self.pick_round(&pending, &waiting);
            let delivered = match self
                .deliver(&pending, &records, &round.send, &mut dead)
                .await
            {
                Some(d) => d,
                None => {
                    self.shared.inflight.release(round.reserved);
                    return Delivery::Abandoned;
                }
            };
            // Delivered keys move into the commit: nothing sends them again.
            let mut keys = Vec::with_capacity(delivered.len());
            let mut digests = Vec::with_capacity(delivered.len());
            for &i in &delivered {
                let p = &mut pending[i];
                if let (Some(d), Some(k)) = (p.digest, p.out.dedupe_key.take()) {
                    keys.push(k);
                    digests.push(d);
                }
            }
            // A repeat whose key this round delivered or found stored is a
            // duplicate, settled by this commit; the rest wait.
            let contended = !round.held.is_empty();
            let mut next_waiting = round.held;
            let mut settled_repeats = 0u64;
            if !round.repeats.is_empty() {
                let mut settled =
                    FewDigests::new(round.repeats.iter().filter_map(|&i| pending[i].digest));
                settled.mark_each(digests.iter().copied());
                settled.mark_each(round.stored.iter().copied());
                for &i in &round.repeats {
                    match pending[i].digest {
                        Some(d) if settled.is_marked(d) => settled_repeats += 1,
                        _ => next_waiting.push(i),
                    }
                }
                next_waiting.sort_unstable();
            }
            let commit_to = next_waiting
                .first()
                .map_or(next_offset, |&i| pending[i].out.offset);
            let batch = self.commit_batch(round_first, commit_to, keys, digests);
            let mut batch = CommitBatch {
                dead_letters: std::mem::take(&mut dead),
                ..batch
            };
            // The DLQ topic first: a crash before the commit duplicates a
            // DLQ-topic record on restart, never loses one.
            if let Some(topic) = &self.route.route.dead_letter_topic
                && !self
                    .shared
                    .dead_letter_producer
                    .publish(&self.shared, &self.stop, topic, &batch.dead_letters)
                    .await
            {
                self.shared.inflight.release(round.reserved);
                return Delivery::Abandoned;
            }
            // Then the changelog: delivered keys are recorded there before
            // the store commit, or not committed at all (see `changelog`).
            if let Some(topic) = &self.route.route.changelog_topic
                && !batch.keys.is_empty()
            {
                let written = writer::write(
                    &self.shared,
                    &self.live,
                    &self.route,
                    topic,
                    &batch,
                    &self.stop,
                )
                .await;
                match written {
                    Ok(mark) => batch.changelog = mark,
                    Err(writer::Stopped) => {
                        self.shared.inflight.release(round.reserved);
                        return Delivery::Abandoned;
                    }
                }
            }
            let committed = self.commit_or_stop(batch).await;
            self.shared.inflight.release(round.reserved);
            if !committed {
                return Delivery::Abandoned;
            }
            stats.delivered.inc_by(delivered.len() as u64);
            stats.duplicates.inc_by(settled_repeats);
            if next_waiting.is_empty() {
                return Delivery::Done;
            }
            round_first = commit_to;
            waiting = next_waiting;
            tokio::task::yield_now().await;
            // Let the other holder of a contended key finish its commit.
            if contended {
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
        }
    }

    /// Choose what a round sends: every waiting record whose key is not
    /// held by another delivery (nor by an earlier record of this round)
    /// and not already in the store. Keys are reserved first, under one
    /// lock, and only then looked up: a key committed elsewhere enters the
    /// index before it leaves the in-flight set, so a reservation that
    /// succeeds always sees it. Duplicates are resolved here.
    fn pick_round(&self, pending: &[Pending], waiting: &[usize]) -> Round {
        let mut tentative = Vec::with_capacity(waiting.len());
        let mut held = Vec::new();
        {
            let mut inflight = self.shared.inflight.reserve_many();
            for &i in waiting {
                match pending[i].digest {
                    Some(d) if !inflight.try_reserve(d) => held.push(i),
                    _ => tentative.push(i),
                }
            }
        }
        // Split the held: behind an earlier record of this round (a key it
        // reserved), or held by another delivery.
        let mut repeats = Vec::new();
        if !held.is_empty() {
            let mut own = FewDigests::new(held.iter().filter_map(|&i| pending[i].digest));
            own.mark_each(tentative.iter().filter_map(|&i| pending[i].digest));
            let (r, elsewhere): (Vec<usize>, Vec<usize>) = held
                .into_iter()
                .partition(|&i| pending[i].digest.is_some_and(|d| own.is_marked(d)));
            (repeats, held) = (r, elsewhere);
        }
        let mut send = Vec::with_capacity(tentative.len());
        let mut reserved = Vec::with_capacity(tentative.len());
        let mut duplicates = Vec::new();
        // One batched lookup (prefetching ahead) instead of one per record.
        let digests: Vec<u128> = tentative
            .iter()
            .filter_map(|&i| pending[i].digest)
            .collect();
        let mut stored = self.shared.store.contains_each(&digests).into_iter();
        for i in tentative {
            match pending[i].digest {
                None => send.push(i),
                Some(d) if stored.next().unwrap_or(false) => duplicates.push(d),
                Some(d) => {
                    reserved.push(d);
                    send.push(i);
                }
            }
        }
        if !duplicates.is_empty() {
            self.route.stats.duplicates.inc_by(duplicates.len() as u64);
            self.shared.inflight.release(duplicates.iter().copied());
        }
        Round {
            send,
            held,
            repeats,
            reserved,
            stored: duplicates,
        }
    }

    /// Send until every record is delivered or permanently failed. Returns the
    /// indices (into `pending`) delivered; permanent failures are appended
    /// to `dead`.
    ///
    /// After an attempt that got nothing through (the sink is down, or
    /// refuses with a halt-class failure), the next attempt after the
    /// backoff sends one record only, the earliest: a probe. A down sink
    /// thus costs one request per partition per backoff, not one per
    /// record. Once a probe gets through, the rest is sent at once. While
    /// the sink is known to be down, a call starts with a probe.
    async fn deliver(
        &self,
        pending: &[Pending],
        records: &[ConsumedRecord],
        send: &[usize],
        dead: &mut Vec<DeadLetter>,
    ) -> Option<Vec<usize>> {
        let mut remaining: Vec<usize> = send.to_vec();
        let mut delivered = Vec::with_capacity(send.len());
        let mut backoff = Backoff::new(
            self.shared.pipeline.retry_initial,
            self.shared.pipeline.retry_max,
        );
        let mut attempts = 0u32;
        let health = &self.route.sink_health;
        // A sink already known to be down is probed first, not sent a chunk.
        let mut probe = health.is_down();
        while !remaining.is_empty() {
            attempts += 1;
            let sending = if probe {
                &remaining[..1]
            } else {
                &remaining[..]
            };
            let batch: Vec<&Outgoing> = sending.iter().map(|&i| &pending[i].out).collect();
            if !self.fence.is_open() {
                tracing::warn!(topic = %self.topic, partition = self.partition, records = remaining.len(),
                    "fenced: the group session may be over, so nothing more is sent for this partition");
                return None;
            }
            let started = Instant::now();
            // A call still running when the fence closes is abandoned, and
            // not polled again: a sink may start further requests inside one
            // call. The next owner sends those records again (the sink's
            // idempotency key absorbs a request that did land).
            let results = tokio::select! {
                biased;
                _ = self.fence.closes() => {
                    tracing::warn!(topic = %self.topic, partition = self.partition, records = batch.len(),
                        "fenced during a sink call: abandoned, not committed");
                    return None;
                }
                r = self.route.sink.deliver(&batch) => r,
            };
            self.observe_sink(&results, started);
            let mut retry = Vec::new();
            let mut answered = 0usize;
            // The first failure's reason, unless a halt-class one comes later.
            let mut worst: Option<(FailureClass, String)> = None;
            for (&i, result) in sending.iter().zip(results) {
                match result {
                    Ok(()) => {
                        answered += 1;
                        delivered.push(i);
                    }
                    Err(e) => match classify_sink(&e) {
                        FailureClass::Permanent => {
                            answered += 1;
                            self.route.stats.dead_lettered.inc();
                            tracing::warn!(
                                route = %self.route.name, topic = %self.topic, partition = self.partition,
                                offset = pending[i].out.offset, "sink rejected record permanently (kept in dead letters): {e}"
                            );
                            dead.push(self.dead_letter(
                                &records[pending[i].record],
                                pending[i].out.key.as_ref(),
                                e.to_string(),
                                "permanent",
                                attempts,
                            ));
                        }
                        class => {
                            if worst.as_ref().is_none_or(|(c, _)| {
                                class == FailureClass::Halt && *c != FailureClass::Halt
                            }) {
                                worst = Some((class, e.to_string()));
                            }
                            retry.push(i);
                        }
                    },
                }
            }
            let failed = retry.len();
            retry.extend_from_slice(&remaining[sending.len()..]);
            remaining = retry;
            if answered > 0 {
                health.answered();
            }
            // Probe next while nothing gets through; send the rest once something does.
            probe = answered == 0 && worst.is_some();
            if let Some((class, reason)) = worst {
                let stats = &self.route.stats;
                stats.retried.inc_by(failed as u64);
                let delay = match class {
                    FailureClass::Halt => {
                        stats.halt_retries.inc();
                        self.live.set_state(PartitionState::Halted);
                        if !self.route.halted.swap(true, Ordering::Relaxed) {
                            stats.halted.set(1);
                            tracing::error!(
                                route = %self.route.name, sink = self.route.sink.name(), class = "halt",
                                "route halted: the sink refuses deliveries until an operator acts ({reason}); \
                                 retrying every {:?}, nothing is skipped",
                                self.shared.pipeline.retry_max
                            );
                        }
                        self.shared.pipeline.retry_max
                    }
                    _ => {
                        stats.transient_retries.inc();
                        self.live.set_state(PartitionState::Retrying);
                        if probe {
                            health.attempt_failed(&reason, self.shared.pipeline.retry_max);
                        }
                        backoff.next_delay()
                    }
                };
                self.live.metrics.backoff.set(delay.as_secs_f64());
                // Nothing got through: the route's halt or the sink's down
                // line already told the operator; per attempt is detail.
                if probe {
                    tracing::debug!(
                        route = %self.route.name, sink = self.route.sink.name(), topic = %self.topic,
                        partition = self.partition, records = remaining.len(), class = class.as_str(),
                        attempt = attempts, retry_in = ?delay, "delivery failed: {reason}"
                    );
                } else {
                    tracing::warn!(
                        route = %self.route.name, sink = self.route.sink.name(), topic = %self.topic,
                        partition = self.partition, records = failed, class = class.as_str(),
                        attempt = attempts, retry_in = ?delay, "delivery failed: {reason}"
                    );
                }
                if self.stop.is_cancelled() {
                    return None;
                }
                tokio::select! {
                    _ = self.stop.cancelled() => return None,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
        if attempts > 1 {
            self.live.metrics.backoff.set(0.0);
            self.live.set_state(PartitionState::Running);
            tracing::info!(
                route = %self.route.name, topic = %self.topic, partition = self.partition,
                attempts, "deliveries succeed again"
            );
        }
        if self.route.halted.swap(false, Ordering::Relaxed) {
            self.route.stats.halted.set(0);
            tracing::info!(route = %self.route.name, sink = self.route.sink.name(), "route resumed");
        }
        Some(delivered)
    }

    /// Sink latency by the worst result class of the call.
    fn observe_sink(&self, results: &[Result<(), crate::sink::SinkError>], started: Instant) {
        let mut status = "ok";
        for r in results {
            if let Err(e) = r {
                let class = classify_sink(e);
                status = match (status, class) {
                    (_, FailureClass::Halt) => "halt",
                    ("halt", _) => "halt",
                    (_, FailureClass::Transient) => "transient",
                    ("transient", _) => "transient",
                    _ => "permanent",
                };
            }
        }
        self.shared.live.metrics.observe_sink(
            self.route.sink.name(),
            status,
            started.elapsed().as_secs_f64(),
        );
    }

    /// Commit after the ack. A failed store write stops the daemon (see
    /// `classify_store`): false means "stop here", nothing more is resolved.
    async fn commit_or_stop(&self, batch: CommitBatch) -> bool {
        let next_offset = batch.next_offset;
        match self.shared.committer.try_commit(batch).await {
            Ok(()) => {
                self.live.metrics.set_committed(next_offset);
                true
            }
            Err((e, returned)) => {
                if returned.topic.is_empty() {
                    // The committer is gone (shutdown): nothing to commit into.
                    tracing::error!(topic = %self.topic, partition = self.partition, "{e}");
                } else {
                    let class = classify_store(&e);
                    self.live.set_state(PartitionState::Halted);
                    tracing::error!(topic = %self.topic, partition = self.partition, class = class.as_str(), "store commit failed");
                    self.shared.store_failed(format!(
                        "{e} (while committing {}/{} up to offset {next_offset})",
                        self.topic, self.partition
                    ));
                }
                false
            }
        }
    }

    fn commit_batch(
        &self,
        first_offset: i64,
        next_offset: i64,
        keys: Vec<String>,
        digests: Vec<u128>,
    ) -> CommitBatch {
        CommitBatch {
            route: self.route.name.to_string(),
            topic: self.topic.to_string(),
            partition: self.partition,
            first_offset,
            next_offset,
            keys,
            digests,
            dead_letters: Vec::new(),
            changelog: None,
        }
    }

    /// `key` is the record's Kafka key: once decoded, it lives in the
    /// record's `Outgoing`, not in `record`.
    fn dead_letter(
        &self,
        record: &ConsumedRecord,
        key: Option<&bytes::Bytes>,
        reason: String,
        class: &str,
        attempts: u32,
    ) -> DeadLetter {
        let now = Utc::now().timestamp_millis();
        DeadLetter {
            route: self.route.name.to_string(),
            topic: self.topic.to_string(),
            partition: self.partition,
            offset: record.offset,
            timestamp_ms: record.timestamp_ms,
            key: key.map(|k| k.to_vec()),
            headers: record
                .headers
                .iter()
                .map(|h| (h.key.clone(), h.value.as_ref().map(|v| v.to_vec())))
                .collect(),
            payload: record.value.as_ref().map(|v| v.to_vec()),
            reason,
            class: class.to_string(),
            attempts,
            first_seen_ms: now,
            last_seen_ms: now,
        }
    }
}
