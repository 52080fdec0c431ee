//! The embedded store: offsets, committed tracking-ID batches, dead letters.
//!
//! Batch-oriented (see DESIGN.md "Store"). Schema 2: a commit appends its
//! batches' digest records to the digest log (`digest_log.rs`, segment files
//! under `digests/`) and their encoded keys to the key log (`keys/`,
//! `key_codec.rs`; fdatasync'd, since lost digests are recomputed from the
//! keys), then ONE sled transaction records the batch headers, the partition
//! offsets, any dead letters and both logs' new ends, followed by one flush:
//! that transaction is the commit point (`staging.rs`). Dedupe lookups are
//! served from an in-memory digest index, loaded at open from the index
//! snapshot a clean close wrote (`snapshot.rs`) plus the digest log after
//! the prefix it covers, or rebuilt by reading the whole log (`rebuild.rs`). Schema-1 stores (digests and
//! keys inside sled) migrate in resumable chunks (`migrate.rs`).

mod api;
mod batch;
mod changelog;
mod codec;
mod dead_letter;
mod digest_log;
mod error;
mod index;
mod key_codec;
mod keys;
mod lock;
#[cfg(test)]
mod log_tests;
mod migrate;
mod perms;
mod prefetch;
mod rebuild;
mod schema;
mod snapshot;
mod staging;
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
