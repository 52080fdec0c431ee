//! Producing a commit's keys to the changelog, after the sink's ack and
//! before the store commit: retried with backoff until acknowledged, and
//! the commit waits for it (see the module above).

use tokio_util::sync::CancellationToken;

use super::record::{self, Origin};
use crate::pipeline::backoff::Backoff;
use crate::pipeline::live::{PartitionLive, PartitionState};
use crate::pipeline::{RouteCtx, Shared};
use crate::store::{ChangelogMark, CommitBatch};

/// `stop` fired while the changelog was failing: nothing may be committed.
#[derive(Debug)]
pub(crate) struct Stopped;

/// Produce `batch.keys` to `changelog_topic`, partition = the batch's
/// partition. Returns the position after the last record written (what the
/// store commit records as applied).
pub(crate) async fn write(
    shared: &Shared,
    live: &PartitionLive,
    route: &RouteCtx,
    changelog_topic: &str,
    batch: &CommitBatch,
    stop: &CancellationToken,
) -> Result<Option<ChangelogMark>, Stopped> {
    let origin = Origin {
        route: &batch.route,
        topic: &batch.topic,
        partition: batch.partition,
        first_offset: batch.first_offset,
        next_offset: batch.next_offset,
        committed_at_ms: crate::store::now_ms(),
    };
    let requests = record::encode(&origin, &batch.keys);
    let mut next_offset = None;
    let mut backoff = Backoff::new(shared.pipeline.retry_initial, shared.pipeline.retry_max);
    let mut failed = false;
    for values in requests {
        let bytes: usize = values.iter().map(Vec::len).sum();
        let records: Vec<_> = values
            .into_iter()
            .map(|value| crate::kafka::OutRecord {
                key: None,
                value,
                headers: Vec::new(),
            })
            .collect();
        loop {
            // Not cancelled by `stop`: a drain finishes the batch in hand,
            // and each attempt is bounded by the request timeout.
            let result = async {
                let producer = shared.producer().await?;
                producer
                    .send(changelog_topic, batch.partition, records.clone())
                    .await
            }
            .await;
            match result {
                Ok(offsets) => {
                    route.stats.changelog.written_bytes.inc_by(bytes as u64);
                    if let Some(last) = offsets.last() {
                        next_offset = Some(last + 1);
                    }
                    break;
                }
                Err(e) => {
                    failed = true;
                    route.stats.changelog.write_retries.inc();
                    live.set_state(PartitionState::Retrying);
                    let delay = backoff.next_delay();
                    live.metrics.backoff.set(delay.as_secs_f64());
                    tracing::warn!(
                        route = %route.name, topic = %batch.topic, partition = batch.partition,
                        changelog_topic, retry_in = ?delay, attempt = backoff.attempts(),
                        "cannot write the changelog; the partition waits: nothing past offset {} \
                         is committed or delivered until these {} IDs are recorded: {e}",
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
        }
    }
    if failed {
        live.metrics.backoff.set(0.0);
        live.set_state(PartitionState::Running);
        tracing::info!(
            route = %route.name, topic = %batch.topic, partition = batch.partition,
            changelog_topic, "changelog written again"
        );
    }
    // The producer returns the offsets it was assigned; a broker that
    // returned none leaves the position where it was (the next restore
    // re-reads, harmlessly).
    Ok(next_offset.map(|next_offset| ChangelogMark {
        topic: changelog_topic.to_string(),
        next_offset,
    }))
}
