//! Dead-letter operations beyond listing: replay through the current config,
//! and purge. Both need the store to themselves (the daemon stopped).

mod replay;

pub use replay::{ReplayError, ReplayOutcome, ReplaySummary, replay};
