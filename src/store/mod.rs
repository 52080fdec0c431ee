//! The embedded sled store: offsets, committed tracking-ID batches, dead letters.
//!
//! Batch-oriented (see DESIGN.md "Store"): each commit writes one value per
//! batch — its packed 128-bit key digests — plus the partition offsets and any
//! dead letters, all in one sled transaction followed by one flush. Dedupe
//! lookups are served from an in-memory digest index rebuilt at open.

mod api;
mod batch;
mod changelog;
mod codec;
mod dead_letter;
mod error;
mod index;
mod keys;
mod lock;
mod perms;
mod schema;
#[cfg(test)]
mod tests;

pub use api::{
    CommitBatch, CommitStats, IdLocation, PruneStats, ReplayCommit, Store, StoreConfig, digest,
};
pub use batch::BatchInfo;
pub use changelog::{ChangelogMark, ChangelogRestore, ChangelogWrite};
/// The store's non-panicking binary reader/writer, shared with the changelog record codec.
pub(crate) use codec::{DecodeResult, Reader, Writer};
pub use dead_letter::DeadLetter;
pub use error::StoreError;
#[doc(hidden)] // exposed for examples/store_bench.rs only
pub use index::DigestIndex;
pub use keys::OffsetEntry;
pub use lock::lock_holder;
pub use schema::SCHEMA_VERSION;

/// Wall clock in unix milliseconds (store timestamps).
pub(crate) fn now_ms() -> i64 {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}
