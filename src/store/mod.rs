//! The embedded sled store: offsets, committed tracking-ID batches, dead letters.
