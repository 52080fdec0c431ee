//! One error type for the store. Every message names the path (and tree/key
//! where relevant) and says what the operator can do about it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "store {} is in use by another tally process ({}); stop it or use its admin API",
        path.display(),
        match pid { Some(p) => format!("pid {p}"), None => "pid unknown".to_string() }
    )]
    Locked { path: PathBuf, pid: Option<u32> },

    #[error(
        "store {} has schema version {found}, but this tally supports up to {supported}; \
         run a newer tally (stores are never downgraded)",
        path.display()
    )]
    NewerSchema {
        path: PathBuf,
        found: u32,
        supported: u32,
    },

    #[error(
        "{} is not a tally store ({detail}); point store.path at an empty or missing directory, \
         or at a directory created by tally",
        path.display()
    )]
    NotATallyStore { path: PathBuf, detail: String },

    #[error(
        "store {} could not be opened by sled ({source}); it may be corrupt or unreadable — \
         restore it from a backup or move it aside (starting empty would re-send every retained record)",
        path.display()
    )]
    Open { path: PathBuf, source: sled::Error },

    #[error(
        "store {} is corrupt: tree `{tree}` key {key}: {detail}; restore it from a backup or move it aside",
        path.display()
    )]
    Corrupt {
        path: PathBuf,
        tree: &'static str,
        key: String,
        detail: String,
    },

    #[error("store {}: {op}: {source}", path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        source: std::io::Error,
    },

    #[error("store {}: sled {op} failed: {source}", path.display())]
    Sled {
        path: PathBuf,
        op: &'static str,
        source: sled::Error,
    },

    #[error(
        "refusing to move committed offset of {topic}/{partition} backwards from {committed} to {attempted} \
         through commit; use reset-offsets to rewind explicitly"
    )]
    OffsetRegression {
        topic: String,
        partition: i32,
        committed: i64,
        attempted: i64,
    },

    #[error("invalid commit batch for {topic}/{partition}: {detail}")]
    InvalidBatch {
        topic: String,
        partition: i32,
        detail: String,
    },

    #[error(
        "store {} refused the write: an earlier flush failed, so durability of later writes is unknown; \
         restart tally",
        path.display()
    )]
    Failed { path: PathBuf },
}

impl StoreError {
    /// Wrap a sled failure of `op` on the store at `path`.
    pub(crate) fn sled_at(
        path: &std::path::Path,
        op: &'static str,
    ) -> impl FnOnce(sled::Error) -> StoreError + use<> {
        let path = path.to_path_buf();
        move |source| StoreError::Sled { path, op, source }
    }

    /// The write failed because the store's filesystem is full (ENOSPC).
    pub fn is_disk_full(&self) -> bool {
        let io = match self {
            StoreError::Io { source, .. } => Some(source),
            StoreError::Sled {
                source: sled::Error::Io(e),
                ..
            }
            | StoreError::Open {
                source: sled::Error::Io(e),
                ..
            } => Some(e),
            _ => None,
        };
        io.is_some_and(|e| {
            e.kind() == std::io::ErrorKind::StorageFull || e.raw_os_error() == Some(28)
        })
    }
}
