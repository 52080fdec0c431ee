//! Group commit: partition workers hand in their resolved batches; one task
//! writes whatever has queued up in ONE store transaction with ONE flush.
//! Under load many partitions share a flush; idle, a batch commits alone.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::store::{CommitBatch, Store};

#[derive(Debug, Clone, thiserror::Error)]
#[error("store commit failed: {0}")]
pub struct CommitFailed(pub String);

type Request = (CommitBatch, oneshot::Sender<Result<(), CommitFailed>>);

#[derive(Debug, Clone)]
pub struct Committer {
    tx: mpsc::Sender<Request>,
}

impl Committer {
    pub fn spawn(store: Arc<Store>, group_max: usize) -> (Committer, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(group_max.max(1) * 2);
        let task = tokio::spawn(run(store, rx, group_max.max(1)));
        (Committer { tx }, task)
    }

    /// Commit one batch; returns once it is durable (or failed).
    pub async fn commit(&self, batch: CommitBatch) -> Result<(), CommitFailed> {
        let (ack_tx, ack_rx) = oneshot::channel();
        self.tx
            .send((batch, ack_tx))
            .await
            .map_err(|_| CommitFailed("committer stopped".into()))?;
        ack_rx
            .await
            .unwrap_or_else(|_| Err(CommitFailed("committer stopped".into())))
    }
}

async fn run(store: Arc<Store>, mut rx: mpsc::Receiver<Request>, group_max: usize) {
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
        let result = tokio::task::spawn_blocking(move || store.commit(&batches))
            .await
            .map_err(|e| CommitFailed(format!("commit task failed: {e}")))
            .and_then(|r| r.map(|_| ()).map_err(|e| CommitFailed(e.to_string())));
        if let Err(e) = &result {
            tracing::error!("{e}");
        }
        for ack in acks {
            let _ = ack.send(result.clone());
        }
    }
}
