//! The changelog: each partition's dedupe state (its delivered tracking
//! IDs) also lives in a Kafka topic, so it follows the partition to another
//! member and rebuilds a lost store — the pattern of Kafka Streams' state
//! store changelogs.
//!
//! **What it holds.** Per route `changelog_topic = "…"`; partition p of
//! every source topic of the route writes to changelog partition p (the
//! topic needs at least as many partitions as each source topic, checked
//! before a partition starts). Each local commit that delivered keys first
//! produces them there: keyless records, many keys per record, lz4 inside
//! (`record`), each naming the route, source topic and partition, the
//! committed offset range and the commit time. Commits that only skip
//! duplicates, dead-letter or step over control records write nothing: a
//! restore re-reads those records and resolves them the same way again.
//!
//! **Ordering: after the sink's ack, before the local commit** (the
//! dead-letter topic's order). A crash in between leaves IDs in the
//! changelog the store lacks: harmless — they *were* delivered — and the
//! restart's restore applies them, so such a crash does not even re-send.
//! The reverse order would lose dedupe state: IDs committed locally but
//! missing from the changelog are delivered again after a takeover or a
//! store loss. If the changelog cannot be written the partition waits and
//! retries with backoff and commits nothing: tally never delivers more than
//! it has recorded (`writer`).
//!
//! **Restore** (`restore`), before a partition worker fetches: read the
//! changelog partition from the position the store recorded for this source
//! partition (or from its beginning) to its high watermark at that moment;
//! insert the IDs (idempotent: an ID already held is skipped), move the
//! partition's offset forward to the highest offset a commit's final record
//! proves delivered, record the new position — in steps of at most
//! `STEP_IDS` IDs, one store transaction each, so an interrupted restore
//! resumes where it stopped. A fresh or deleted store therefore rebuilds
//! from the changelog before it delivers anything, and a member taking a
//! partition over starts with the previous owner's IDs. Records older than
//! `store.retention` give their offsets but not their IDs (retention would
//! prune them at once).
//!
//! **Position.** A local commit whose keys went to changelog offsets M..=N
//! records N+1 as applied in the same store transaction — once a restore
//! has established a position, and only if that position was M. The worker
//! is usually the partition's only writer from its restore on, but not
//! always: a `dlq replay` on another store, a member cut off after its
//! sink's ack that records its last IDs once the next owner runs, and the
//! other topics of a multi-topic route write there too. Their records are
//! not in this store; moving the position over them would hide them from
//! every later restore (a duplicate of such an ID was delivered again after
//! a restart). So a gap leaves the position where it was, and the next
//! restore reads from there (`store::changelog::after_commit`).
//!
//! **Scope.** IDs follow their partition. Across members, a duplicate is
//! caught when it lands in the partition of the original — which is what
//! producers keying records by tracking ID (Kafka's default partitioner)
//! give. Within one member all partitions share one index, as before.
//! A multi-topic route's topics share changelog partition p; a restore
//! applies only the records of its own topic.
//!
//! **Group mode.** The membership loop starts a `PartitionWorker` per
//! assigned partition, and the worker restores before it fetches: a
//! takeover is a restore, with nothing for the loop to call.

pub(super) mod record;
pub(super) mod restore;
pub(super) mod writer;

/// IDs per restore step (one store transaction + flush each).
pub(super) const STEP_IDS: usize = 100_000;
