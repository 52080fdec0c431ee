//! Per-partition fetch-ahead: keeps up to `prefetch_batches` fetched batches
//! queued for the worker, so delivery and fetching overlap. The bounded
//! channel is the in-flight window: a slow sink stops the fetcher.
//!
//! A fetch first takes a place in that window, then reserves its bytes from
//! the process-wide fetch budget (`fetch_budget.rs`), and asks the broker
//! for no more than the budget's per-fetch size. The reservation rides with
//! the batch and is released when the worker is done with it, so what all
//! partitions hold together stays within `[pipeline] fetch_memory_mb`.
//!
//! Every fetch response carries the high watermark, which feeds the lag
//! metric. While the window or the budget is full (sink slow or down) no
//! fetch happens, so the fetcher probes the watermark with a tiny fetch
//! every `WATERMARK_PROBE` instead: lag keeps growing with the log during an
//! outage rather than freezing at its last value.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::backoff::Backoff;
use super::classify::{FailureClass, classify_kafka, kafka_failure_stops_daemon};
use super::fetch_budget::{Hold, MIN_FETCH_BYTES};
use super::live::{PartitionLive, PartitionState};
use super::worker::DECODED_RECORD_BYTES;
use crate::admin::metrics::PartitionMetrics;
use crate::config::{OutOfRangePolicy, StartPosition};
use crate::kafka::{ConsumedRecord, ErrorKind, KafkaError, OffsetSpec, PartitionConsumer};

/// A fetched batch: every offset in `[first_offset, next_offset)` is either
/// in `records` or was stepped over (control batch, aborted transaction).
#[derive(Debug)]
pub(super) struct Fetched {
    pub first_offset: i64,
    pub next_offset: i64,
    pub high_watermark: i64,
    pub records: Vec<ConsumedRecord>,
    /// This batch's bytes in the fetch budget, released with the batch.
    #[expect(
        dead_code,
        reason = "held, never read: dropping the batch releases its bytes"
    )]
    pub budget: Hold,
}

pub(super) struct Fetcher {
    pub shared: Arc<Shared>,
    pub consumer: PartitionConsumer,
    pub topic: Arc<str>,
    pub partition: i32,
    pub on_out_of_range: OutOfRangePolicy,
    pub metrics: PartitionMetrics,
    /// The partition's state, for a fetch that halts.
    pub live: Arc<PartitionLive>,
    /// This partition's stop signal (shutdown, or the partition revoked).
    pub stop: CancellationToken,
}

/// Sizes a partition's fetches so that what the answer costs matches what
/// was reserved for it: the broker's limit counts record bytes only, and
/// returns a first batch larger than the limit whole.
struct Sizer {
    /// A recent answer larger than its reservation: its first batch alone
    /// needs this much, so reserve it up front (halved while answers fit,
    /// dropped at the log end).
    /// Until the first answer shows the partition's batch sizes, the
    /// largest fetch the config allows.
    oversize: usize,
    /// Record bytes and what they cost with their decoded structs, last time.
    bytes: usize,
    charged: usize,
}

impl Sizer {
    fn new(fetch_max_bytes: usize) -> Sizer {
        Sizer {
            oversize: fetch_max_bytes,
            // Until an answer shows the records' size: small records
            // cost about three times their bytes once decoded.
            bytes: 1,
            charged: 3,
        }
    }

    /// Record bytes to ask for so that, structs added, `reserved` is spent.
    fn ask(&self, reserved: usize) -> usize {
        (reserved.saturating_mul(self.bytes) / self.charged.max(1)).max(1)
    }

    /// What `ask` record bytes are expected to cost once decoded.
    fn cost(&self, ask: usize) -> usize {
        ask.saturating_mul(self.charged) / self.bytes.max(1)
    }

    fn saw(&mut self, reserved: usize, bytes: usize, charged: usize) {
        self.oversize = if charged > reserved {
            charged
        } else {
            self.oversize / 2
        };
        if bytes > 0 {
            (self.bytes, self.charged) = (bytes, charged.max(bytes));
        }
    }
}

/// The wait of a fetch that holds more than its share of the budget.
const SHORT_POLL: Duration = Duration::from_millis(10);

/// How often a blocked fetcher asks for the high watermark.
const WATERMARK_PROBE: Duration = Duration::from_secs(5);

impl Fetcher {
    pub async fn run(mut self, mut offset: i64, tx: mpsc::Sender<Fetched>) {
        let cancel = self.stop.clone();
        let kafka = self.shared.kafka.clone();
        let mut backoff = Backoff::new(
            self.shared.pipeline.retry_initial,
            self.shared.pipeline.retry_max,
        );
        // Set while this fetcher holds the partition halted (not the sink).
        let mut halted = false;
        let budget = Arc::clone(&self.shared.fetch_budget);
        let _member = budget.join();
        let max_fetch = usize::try_from(kafka.fetch_max_bytes).unwrap_or(1 << 20);
        let mut sizer = Sizer::new(max_fetch);
        loop {
            // A place in the window first, then the bytes: a batch is only
            // fetched when it has somewhere to go.
            let slot = match self.wait_probing(tx.reserve(), offset).await {
                Some(Ok(slot)) => slot,
                Some(Err(_)) | None => return, // worker gone or shutdown
            };
            // The record bytes this partition's share buys, within what the
            // config allows; reserved at what they are expected to cost.
            let share = budget.fetch_size();
            let ask = sizer
                .ask(share)
                .clamp(MIN_FETCH_BYTES.min(max_fetch), max_fetch);
            let expected = sizer.cost(ask);
            let want = expected.max(sizer.oversize);
            let Some(mut hold) = self.wait_probing(budget.reserve(want), offset).await else {
                return;
            };
            let max_bytes = i32::try_from(ask).unwrap_or(i32::MAX);
            // A reservation raised for an oversized batch is never held
            // across a long poll: at the log end it would keep other
            // partitions waiting for nothing.
            let short_poll = want > expected.max(share);
            let max_wait = if short_poll {
                // Not zero: the test broker answers an empty partition's
                // zero-wait fetch with UNKNOWN_TOPIC_OR_PARTITION.
                SHORT_POLL
            } else {
                kafka.fetch_max_wait
            };
            let started = tokio::time::Instant::now();
            let result = tokio::select! {
                _ = cancel.cancelled() => return,
                r = self.consumer.fetch(offset, max_bytes, max_wait) => r,
            };
            match result {
                Ok(f) => {
                    backoff.reset();
                    if std::mem::take(&mut halted) {
                        self.live.set_state(PartitionState::Running);
                        tracing::info!(topic = %self.topic, partition = self.partition, offset, "fetching again");
                    }
                    self.metrics.set_high_watermark(f.high_watermark);
                    if f.next_offset <= offset && f.records.is_empty() {
                        drop((hold, slot));
                        // At the log end: what comes next is live traffic,
                        // sized by the share until it shows otherwise.
                        sizer.oversize = 0;
                        if short_poll {
                            continue; // the next fetch long-polls
                        }
                        // Nothing resolvable yet. An open transaction answers at
                        // once (its records are held back), so wait out the poll
                        // interval here rather than spin.
                        let rest = kafka.fetch_max_wait.saturating_sub(started.elapsed());
                        tokio::select! {
                            _ = cancel.cancelled() => return,
                            _ = tokio::time::sleep(rest) => {}
                        }
                        continue;
                    }
                    // What the batch keeps alive: the response's record
                    // data, the records' structs, and (while its worker
                    // resolves it) a decoded chunk about as large again.
                    let decoded = f.records.len().min(self.shared.pipeline.max_batch_records)
                        * DECODED_RECORD_BYTES;
                    let charged =
                        f.bytes + f.records.capacity() * size_of::<ConsumedRecord>() + decoded;
                    hold.resize(charged);
                    sizer.saw(want, f.bytes, charged);
                    let next = f.next_offset.max(offset);
                    slot.send(Fetched {
                        first_offset: offset,
                        next_offset: next,
                        high_watermark: f.high_watermark,
                        records: f.records,
                        budget: hold,
                    });
                    offset = next;
                }
                Err(e) if e.kind() == ErrorKind::OffsetOutOfRange => {
                    drop((hold, slot));
                    match self.on_out_of_range(offset, &e).await {
                        Some(new_offset) => offset = new_offset,
                        None => return,
                    }
                }
                Err(e) if classify_kafka(&e) == FailureClass::Halt => {
                    drop((hold, slot));
                    if kafka_failure_stops_daemon(&e) {
                        let doing = format!("cannot fetch {}/{}", self.topic, self.partition);
                        self.shared.kafka_failed(&doing, e);
                        return;
                    }
                    // Broken data or protocol on this partition: never skip
                    // past it; retry slowly and show the partition halted.
                    let delay = self.shared.pipeline.retry_max;
                    halted = true;
                    self.live.set_state(PartitionState::Halted);
                    tracing::error!(
                        topic = %self.topic, partition = self.partition, offset, retry_in = ?delay,
                        "partition halted, nothing is skipped: fetch failed: {e}"
                    );
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
                Err(e) => {
                    drop((hold, slot));
                    let delay = backoff.next_delay();
                    tracing::warn!(
                        topic = %self.topic, partition = self.partition, offset,
                        attempt = backoff.attempts(), retry_in = ?delay,
                        "fetch failed: {e}"
                    );
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// Awaits `wait` (a place in the window, or budget bytes); meanwhile
    /// keeps the high watermark current. A probe fetches from the last known
    /// watermark (or `offset`) with a 1-byte limit: at the log end that is
    /// an empty answer, past it at most one record batch — cheap either way.
    /// `None` on shutdown.
    async fn wait_probing<F: Future>(&mut self, wait: F, offset: i64) -> Option<F::Output> {
        let cancel = self.stop.clone();
        let mut wait = std::pin::pin!(wait);
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return None,
                out = &mut wait => return Some(out),
                _ = tokio::time::sleep(WATERMARK_PROBE) => self.probe_watermark(offset).await,
            }
        }
    }

    async fn probe_watermark(&mut self, offset: i64) {
        let from = offset.max(self.metrics.high_watermark.get());
        let probe = tokio::time::timeout(
            self.shared.kafka.request_timeout,
            self.consumer.fetch(from, 1, Duration::from_millis(10)),
        )
        .await;
        match probe {
            Ok(Ok(f)) => self.metrics.set_high_watermark(f.high_watermark),
            Ok(Err(e)) => {
                tracing::debug!(topic = %self.topic, partition = self.partition, "watermark probe failed: {e}")
            }
            Err(_) => {
                tracing::debug!(topic = %self.topic, partition = self.partition, "watermark probe timed out")
            }
        }
    }

    async fn on_out_of_range(&mut self, offset: i64, e: &KafkaError) -> Option<i64> {
        let spec = match self.on_out_of_range {
            OutOfRangePolicy::Fail => {
                tracing::error!(
                    topic = %self.topic, partition = self.partition, offset,
                    "offset out of range ({e}); on_out_of_range = \"fail\": this partition stops. \
                     Use `tally reset-offsets` to choose where to resume, then restart"
                );
                self.shared.failed_partition();
                return None;
            }
            OutOfRangePolicy::Earliest => StartPosition::Earliest,
            OutOfRangePolicy::Latest => StartPosition::Latest,
        };
        let new_offset = resolve_position(
            &self.shared,
            &self.stop,
            &mut self.consumer,
            spec,
            &self.topic,
            self.partition,
        )
        .await?;
        tracing::warn!(
            topic = %self.topic, partition = self.partition, offset, resumed_at = new_offset,
            "OFFSET OUT OF RANGE: records between {offset} and {new_offset} are no longer on the broker \
             (retention?) and cannot be delivered; resuming at the {:?} offset per on_out_of_range",
            spec
        );
        Some(new_offset)
    }
}

/// Resolve `earliest`/`latest` to an offset, retrying until it works or
/// shutdown. `latest` is the last stable offset from a fetch response: the
/// broker's ListOffsets "latest" is unreliable on the test broker, and a
/// fetch's watermark is what the consumer would see anyway.
pub(super) async fn resolve_position(
    shared: &Shared,
    stop: &CancellationToken,
    consumer: &mut PartitionConsumer,
    spec: StartPosition,
    topic: &str,
    partition: i32,
) -> Option<i64> {
    let mut backoff = Backoff::new(shared.pipeline.retry_initial, shared.pipeline.retry_max);
    loop {
        let attempt = async {
            let earliest = consumer.list_offset(OffsetSpec::Earliest).await?;
            match spec {
                StartPosition::Earliest => Ok::<i64, KafkaError>(earliest),
                StartPosition::Latest => {
                    let f = consumer
                        .fetch(earliest, 1024, std::time::Duration::from_millis(10))
                        .await?;
                    let end = if f.last_stable_offset >= 0 {
                        f.last_stable_offset
                            .min(f.high_watermark.max(f.last_stable_offset))
                    } else {
                        f.high_watermark
                    };
                    Ok(end.max(earliest))
                }
            }
        };
        let result = tokio::select! {
            _ = stop.cancelled() => return None,
            r = attempt => r,
        };
        match result {
            Ok(o) => return Some(o),
            Err(e) if kafka_failure_stops_daemon(&e) => {
                shared.kafka_failed(&format!("cannot resolve {topic}/{partition} {spec:?}"), e);
                return None;
            }
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!(topic, partition, retry_in = ?delay, "cannot resolve {spec:?} offset: {e}");
                tokio::select! {
                    _ = stop.cancelled() => return None,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}
