//! Group commit: partition workers hand in their resolved batches; one task
//! writes whatever has queued up in ONE store transaction with ONE flush.
//! Under load many partitions share a flush; idle, a batch commits alone.

use std::sync::Arc;

use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::store::{CommitBatch, Store};

#[derive(Debug, Clone, thiserror::Error)]
#[error("store commit failed: {0}")]
pub struct CommitFailed(pub String);

/// A failed commit hands the batch back, so the caller can retry it without
/// keeping a copy of every batch it sends.
pub type CommitResult = Result<(), (CommitFailed, CommitBatch)>;

type Request = (CommitBatch, oneshot::Sender<CommitResult>);

#[derive(Debug, Clone)]
pub struct Committer {
    tx: mpsc::Sender<Request>,
}

impl Committer {
    pub fn spawn(
        store: Arc<Store>,
        group_max: usize,
        latency: Histogram,
    ) -> (Committer, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(group_max.max(1) * 2);
        let task = tokio::spawn(run(store, rx, group_max.max(1), latency));
        (Committer { tx }, task)
    }

    /// Commit one batch; returns once it is durable. A failure returns the
    /// batch for a retry.
    pub async fn try_commit(&self, batch: CommitBatch) -> CommitResult {
        let (ack_tx, ack_rx) = oneshot::channel();
        if let Err(e) = self.tx.send((batch, ack_tx)).await {
            let (batch, _) = e.0;
            return Err((CommitFailed("committer stopped".into()), batch));
        }
        match ack_rx.await {
            Ok(result) => result,
            // The committer dropped the request: it is shutting down.
            Err(_) => Err((
                CommitFailed("committer stopped".into()),
                CommitBatch::default(),
            )),
        }
    }
}

async fn run(
    store: Arc<Store>,
    mut rx: mpsc::Receiver<Request>,
    group_max: usize,
    latency: Histogram,
) {
    while let Some(first) = rx.recv().await {
        let mut group = vec![first];
        while group.len() < group_max {
            match rx.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        let (batches, acks): (Vec<CommitBatch>, Vec<_>) = group.into_iter().unzip();
        let store = Arc::clone(&store);
        let latency = latency.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            // Where a commit's time goes (TALLY_LOG=tally::pipeline::committer=debug).
            let result = store
                .commit(&batches)
                .map(|stats| {
                    tracing::debug!(
                        batches = stats.batches,
                        ids = stats.ids_written,
                        bytes = stats.bytes_written,
                        log_ms = stats.log_time.as_secs_f64() * 1e3,
                        txn_ms = stats.txn_time.as_secs_f64() * 1e3,
                        flush_ms = stats.flush_time.as_secs_f64() * 1e3,
                        total_ms = started.elapsed().as_secs_f64() * 1e3,
                        "store commit"
                    );
                })
                .map_err(|e| {
                    CommitFailed(if e.is_disk_full() {
                        format!(
                            "{e} — disk full (ENOSPC) on the store's filesystem: free space there, \
                             then start tally again (nothing past the last commit was acknowledged)"
                        )
                    } else {
                        e.to_string()
                    })
                });
            latency.observe(started.elapsed().as_secs_f64());
            (result, batches)
        })
        .await;
        match outcome {
            Ok((Ok(()), _)) => {
                for ack in acks {
                    let _ = ack.send(Ok(()));
                }
            }
            Ok((Err(e), batches)) => {
                tracing::error!("{e}");
                for (ack, batch) in acks.into_iter().zip(batches) {
                    let _ = ack.send(Err((e.clone(), batch)));
                }
            }
            Err(join) => {
                // The batches are gone with the panicked task; callers see "stopped".
                tracing::error!("commit task failed: {join}");
            }
        }
    }
}
