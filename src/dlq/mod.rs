//! Dead-letter operations beyond listing: replay through the current config,
//! and purge. Run by the CLI on a stopped store, or by the daemon for its
//! admin API (`POST /v1/dead-letters/replay|purge`).

mod replay;

pub use replay::{
    ReplayError, ReplayOutcome, ReplayProducer, ReplayRoute, ReplayRoutes, ReplaySummary, replay,
    replay_with,
};

use std::time::Duration;

use crate::store::{DeadLetter, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    #[error("no dead letter with id {0}; `tally dlq list` shows the ids")]
    NotFound(u64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One letter by id (an error if it does not exist), or all, optionally of one route.
pub fn select(
    store: &Store,
    id: Option<u64>,
    route: Option<&str>,
) -> Result<Vec<(u64, DeadLetter)>, SelectError> {
    let letters = match id {
        Some(id) => match store.dead_letter(id)? {
            Some(d) => vec![(id, d)],
            None => return Err(SelectError::NotFound(id)),
        },
        None => store.dead_letters()?,
    };
    Ok(letters
        .into_iter()
        .filter(|(_, d)| route.is_none_or(|r| d.route == r))
        .collect())
}

/// Delete the selected letters (those last seen longer than `older_than`
/// ago, when given); returns how many went.
pub fn purge(
    store: &Store,
    id: Option<u64>,
    older_than: Option<Duration>,
    route: Option<&str>,
) -> Result<usize, SelectError> {
    let mut letters = select(store, id, route)?;
    if let Some(age) = older_than {
        let cutoff = chrono::Utc::now().timestamp_millis()
            - i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
        letters.retain(|(_, d)| d.last_seen_ms < cutoff);
    }
    let seqs: Vec<u64> = letters.iter().map(|(s, _)| *s).collect();
    Ok(store.remove_dead_letters(&seqs)?)
}
