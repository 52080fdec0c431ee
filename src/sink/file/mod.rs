//! Sink `file`: one JSON line per record,
//! `{topic, partition, offset, key, dedupe_key, event}`, fsynced before ack.
//!
//! All partitions share one writer task, so concurrent batches are written
//! together and share one fsync (group commit).

mod line;
mod page_cache;
mod spare;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::{Outgoing, SinkError};

pub use page_cache::PageCache;

#[derive(Debug, thiserror::Error)]
pub enum FileSinkError {
    #[error("file sink: cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("file sink: cannot repair a torn last line in {path}: {source}")]
    Repair {
        path: PathBuf,
        source: std::io::Error,
    },
}

type WriteRequest = (Vec<u8>, oneshot::Sender<Result<(), SinkError>>);

#[derive(Debug)]
pub struct FileSink {
    tx: mpsc::Sender<WriteRequest>,
    path: PathBuf,
    /// Line buffers the writer is done with.
    spares: Arc<spare::Spares>,
}

impl FileSink {
    /// Open (or create) the output file. A torn last line left by a crash
    /// mid-write was never acknowledged, so it is cut off before appending.
    pub fn open(path: &Path, page_cache: PageCache) -> Result<FileSink, FileSinkError> {
        let (file, len) = writer::open_repaired(path)?;
        let pages = page_cache::Dropper::new(page_cache, len);
        let (tx, rx) = mpsc::channel(256);
        let spares = Arc::new(spare::Spares::default());
        writer::spawn(file, path.to_path_buf(), rx, Arc::clone(&spares), pages);
        Ok(FileSink {
            tx,
            path: path.to_path_buf(),
            spares,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub async fn deliver(&self, batch: &[&Outgoing]) -> Vec<Result<(), SinkError>> {
        let mut buf = self
            .spares
            .take(batch.iter().map(|o| line::capacity(o)).sum());
        let mut lines = line::LineWriter::default();
        for record in batch {
            lines.write_line(&mut buf, record);
        }
        let (ack_tx, ack_rx) = oneshot::channel();
        let result = match self.tx.send((buf, ack_tx)).await {
            Ok(()) => ack_rx.await.unwrap_or(Err(SinkError::Stopped)),
            Err(_) => Err(SinkError::Stopped),
        };
        // One write + fsync covers the whole batch: all or nothing.
        vec![result; batch.len()]
    }
}

#[cfg(test)]
mod tests;
