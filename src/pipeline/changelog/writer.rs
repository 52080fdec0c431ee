//! Producing a commit's keys to the changelog, after the sink's ack and
//! before the store commit: retried with backoff until acknowledged, and
//! the commit waits for it (see the module above).

use tokio_util::sync::CancellationToken;

use super::record::{self, Origin};
use crate::kafka::{KafkaError, OutRecord, Producer};
use crate::pipeline::backoff::Backoff;
use crate::pipeline::classify::kafka_failure_stops_daemon;
use crate::pipeline::live::{PartitionLive, PartitionState};
use crate::pipeline::{RouteCtx, Shared};
use crate::store::{ChangelogWrite, CommitBatch};

/// `stop` fired while the changelog was failing: nothing may be committed.
#[derive(Debug)]
pub(crate) struct Stopped;

/// What one successful `produce` wrote.
#[derive(Debug)]
pub(crate) struct Produced {
    /// The changelog offsets the records took; None if the broker reported
    /// none, or another writer's record landed between two of our produce
    /// requests (then the store's position does not move over it).
    pub written: Option<ChangelogWrite>,
    pub bytes: usize,
}

/// One attempt: `batch.keys` to `changelog_topic`, partition = the batch's
/// partition, as produce requests in order. A failed attempt may have
/// written some requests; repeating it writes them again, which a restore
/// absorbs (an ID already held is skipped).
pub(crate) async fn produce(
    producer: &Producer,
    changelog_topic: &str,
    batch: &CommitBatch,
) -> Result<Produced, KafkaError> {
    let origin = Origin {
        route: &batch.route,
        topic: &batch.topic,
        partition: batch.partition,
        first_offset: batch.first_offset,
        next_offset: batch.next_offset,
        committed_at_ms: crate::store::now_ms(),
    };
    let mut produced = Produced {
        written: None,
        bytes: 0,
    };
    let mut gapless = true;
    for values in record::encode(&origin, &batch.keys) {
        produced.bytes += values.iter().map(Vec::len).sum::<usize>();
        let records = values
            .into_iter()
            .map(|value| OutRecord {
                key: None,
                value,
                headers: Vec::new(),
            })
            .collect();
        let offsets = producer
            .send(changelog_topic, batch.partition, records)
            .await?;
        let (Some(&first), Some(&last)) = (offsets.first(), offsets.last()) else {
            gapless = false;
            continue;
        };
        match &mut produced.written {
            None => {
                produced.written = Some(ChangelogWrite {
                    topic: changelog_topic.to_string(),
                    first_offset: first,
                    next_offset: last + 1,
                })
            }
            Some(w) => {
                gapless &= w.next_offset == first;
                w.next_offset = last + 1;
            }
        }
    }
    if !gapless {
        produced.written = None;
    }
    Ok(produced)
}

/// `produce` until it succeeds; the partition waits meanwhile. Returns
/// where the records went, for the store commit's changelog position.
pub(crate) async fn write(
    shared: &Shared,
    live: &PartitionLive,
    route: &RouteCtx,
    changelog_topic: &str,
    batch: &CommitBatch,
    stop: &CancellationToken,
) -> Result<Option<ChangelogWrite>, Stopped> {
    let mut backoff = Backoff::new(shared.pipeline.retry_initial, shared.pipeline.retry_max);
    loop {
        let started = std::time::Instant::now();
        // Not cancelled by `stop`: a drain finishes the batch in hand, and
        // each attempt is bounded by the request timeout.
        let result = async {
            let producer = shared.producer().await?;
            produce(producer, changelog_topic, batch).await
        }
        .await;
        let e = match result {
            Ok(p) => {
                let stats = &route.stats.changelog;
                stats
                    .write_duration
                    .observe(started.elapsed().as_secs_f64());
                stats.written_bytes.inc_by(p.bytes as u64);
                if backoff.attempts() > 0 {
                    live.metrics.backoff.set(0.0);
                    live.set_state(PartitionState::Running);
                    tracing::info!(
                        route = %route.name, topic = %batch.topic, partition = batch.partition,
                        changelog_topic, "changelog written again"
                    );
                }
                return Ok(p.written);
            }
            Err(e) => e,
        };
        // A refused TLS handshake or SASL login will not pass on a retry:
        // the daemon stops, as it does for the same refusal on a fetch.
        if kafka_failure_stops_daemon(&e) {
            let doing = format!(
                "cannot write changelog topic {changelog_topic} for {}/{}",
                batch.topic, batch.partition
            );
            shared.kafka_failed(&doing, e);
            return Err(Stopped);
        }
        route.stats.changelog.write_retries.inc();
        live.set_state(PartitionState::Retrying);
        let delay = backoff.next_delay();
        live.metrics.backoff.set(delay.as_secs_f64());
        tracing::warn!(
            route = %route.name, topic = %batch.topic, partition = batch.partition,
            changelog_topic, retry_in = ?delay, attempt = backoff.attempts(),
            "cannot write the changelog; the partition waits: nothing past offset {} is \
             committed or delivered until these {} IDs are recorded: {e}",
            batch.first_offset, batch.keys.len()
        );
        if stop.is_cancelled() {
            return Err(Stopped);
        }
        tokio::select! {
            _ = stop.cancelled() => return Err(Stopped),
            _ = tokio::time::sleep(delay) => {}
        }
    }
}
