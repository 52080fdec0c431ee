//! `dlq replay`: run dead letters through their route again — decode with
//! the route's current decoder, dedupe against the store, deliver through the
//! route's sink — then commit the delivered keys and drop the resolved
//! letters in ONE store transaction (`Store::commit_replay`).
//!
//! Same rule as the pipeline: never mark before the ack. A crash between
//! delivery and commit leaves the letter in place; replaying it again is
//! absorbed by the sink's idempotency key, exactly as a re-fetch would be.
//! Routes with a `changelog_topic` get the delivered keys recorded there
//! between the deliveries and the commit, as the pipeline does; if that
//! fails nothing is committed (the letters stay, to be replayed again).
//! Their letters are also checked against that changelog first, from where
//! this store stopped reading it: another member (or store) may have
//! delivered the same key in the letter's partition since — in group mode
//! the member holding a letter rarely still owns its partition.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;

use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::format::{Decoded, Decoder};
use crate::kafka::{ClusterClient, KafkaConfig, KafkaError, Producer, SecurityError};
use crate::pipeline::InFlight;
use crate::pipeline::classify::classify_sink;
use crate::sink::{Outgoing, Sink, SinkSetupError, Sinks};
use crate::store::{CommitBatch, DeadLetter, ReplayCommit, Store, StoreError, digest};

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Sink(#[from] SinkSetupError),
    #[error(transparent)]
    Kafka(#[from] SecurityError),
    #[error(
        "could not record the replayed IDs in changelog topic {topic} ({source}); nothing was \
         committed: the dead letters stay, and replaying them again re-sends them (absorbed by \
         the sink's idempotency key)"
    )]
    Changelog { topic: String, source: KafkaError },
    #[error(
        "could not read changelog topic {topic} for {source_topic}/{partition} to check whether \
         another member delivered the letters' IDs since ({reason}); nothing was sent or committed"
    )]
    ChangelogRead {
        topic: String,
        source_topic: String,
        partition: i32,
        reason: String,
    },
}

/// What happened to one dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayOutcome {
    /// Delivered now; the letter is gone.
    Replayed,
    /// Its dedupe key was already committed (or delivered earlier in this
    /// replay); nothing sent, the letter is gone.
    Duplicate,
    /// Failed again; the letter stays with attempts + 1 and this reason.
    StillFailing { class: String, reason: String },
}

#[derive(Debug, Default)]
pub struct ReplaySummary {
    /// Per dead letter id, in the order replayed.
    pub outcomes: Vec<(u64, ReplayOutcome)>,
}

impl ReplaySummary {
    pub fn count(&self, f: impl Fn(&ReplayOutcome) -> bool) -> usize {
        self.outcomes.iter().filter(|(_, o)| f(o)).count()
    }
    pub fn replayed(&self) -> usize {
        self.count(|o| *o == ReplayOutcome::Replayed)
    }
    pub fn duplicates(&self) -> usize {
        self.count(|o| *o == ReplayOutcome::Duplicate)
    }
    pub fn still_failing(&self) -> usize {
        self.count(|o| matches!(o, ReplayOutcome::StillFailing { .. }))
    }
}

/// A letter that decoded and is to be sent.
struct Candidate {
    seq: u64,
    out: Outgoing,
    digest: Option<u128>,
}

/// What replay needs of a route: its current decoder and sink, and where
/// it records delivered keys.
pub struct ReplayRoute {
    pub decoder: Decoder,
    pub sink: Arc<Sink>,
    pub changelog_topic: Option<String>,
}

pub type ReplayRoutes = HashMap<String, ReplayRoute>;

/// How a replay reaches its routes' changelog topics: the Kafka config
/// (None when no route has one) and a producer connected on first use.
pub struct ReplayProducer<'a> {
    pub kafka: Option<&'a KafkaConfig>,
    pub producer: &'a OnceCell<Producer>,
}

/// Replay `letters` (oldest first) on a store this process holds, with
/// sinks built from `settings` (the daemon is stopped).
pub async fn replay(
    settings: &Settings,
    store: &Store,
    letters: Vec<(u64, DeadLetter)>,
) -> Result<ReplaySummary, ReplayError> {
    let sinks = Sinks::build(settings)?;
    let mut routes = ReplayRoutes::new();
    for route in &settings.routes {
        let sink = sinks
            .get(route.sink)
            .ok_or(SinkSetupError::NotConfigured("route sink"))?;
        routes.insert(
            route.name.clone(),
            ReplayRoute {
                decoder: Decoder::for_route(route),
                sink,
                changelog_topic: route.changelog_topic.clone(),
            },
        );
    }
    let kafka = match settings.routes.iter().any(|r| r.changelog_topic.is_some()) {
        true => Some(crate::pipeline::kafka_config(&settings.kafka)?),
        false => None,
    };
    let producer = OnceCell::new();
    let out = ReplayProducer {
        kafka: kafka.as_ref(),
        producer: &producer,
    };
    replay_with(&routes, store, letters, None, &out).await
}

/// Replay through the given routes. In the daemon, `inflight` is the
/// pipeline's own set of keys being delivered: a key a partition is sending
/// right now is not sent a second time by the replay.
pub async fn replay_with(
    routes: &ReplayRoutes,
    store: &Store,
    letters: Vec<(u64, DeadLetter)>,
    inflight: Option<&InFlight>,
    changelog: &ReplayProducer<'_>,
) -> Result<ReplaySummary, ReplayError> {
    let mut reserved = Reserved {
        inflight,
        digests: Vec::new(),
    };
    let now = Utc::now();
    let mut outcomes: BTreeMap<u64, ReplayOutcome> = BTreeMap::new();
    let by_seq: HashMap<u64, DeadLetter> = letters.iter().cloned().collect();
    // Per route, in letter order: what to send.
    let mut to_send: BTreeMap<String, Vec<Candidate>> = BTreeMap::new();
    // Letters whose key an earlier letter of this replay is sending: they are
    // duplicates only if that one is delivered.
    let mut behind: Vec<(u64, u64)> = Vec::new();
    let mut holders: HashMap<u128, u64> = HashMap::new();
    let mut decoded: Vec<(u64, &DeadLetter, Option<Bytes>, Decoded)> = Vec::new();
    for (seq, d) in &letters {
        let Some(ReplayRoute { decoder, .. }) = routes.get(d.route.as_str()) else {
            outcomes.insert(
                *seq,
                failing(
                    "permanent",
                    format!("route `{}` is not in the config", d.route),
                ),
            );
            continue;
        };
        let key = d.key.clone().map(Bytes::from);
        let value = d.payload.clone().map(Bytes::from);
        match decoder.decode(key.as_ref(), value.as_ref()) {
            Ok(x) => decoded.push((*seq, d, key, x)),
            Err(e) => {
                outcomes.insert(*seq, failing("decode", e.to_string()));
            }
        }
    }
    let recorded = recorded_since(routes, store, changelog, &decoded).await?;
    for (seq, d, key, decoded) in decoded {
        let digest = decoded.dedupe_key.as_deref().map(|k| digest(&d.route, k));
        if let Some(dg) = digest {
            if store.contains(dg) || recorded.contains(&dg) {
                outcomes.insert(seq, ReplayOutcome::Duplicate);
                continue;
            }
            if let Some(holder) = holders.get(&dg) {
                behind.push((seq, *holder));
                continue;
            }
            if !reserved.try_reserve(dg) {
                outcomes.insert(
                    seq,
                    failing(
                        "transient",
                        "a partition is delivering the same dedupe key right now; replay again once it is committed".into(),
                    ),
                );
                continue;
            }
            // Checked again once reserved: a partition may have committed
            // the key between the first check and the reservation.
            if store.contains(dg) {
                outcomes.insert(seq, ReplayOutcome::Duplicate);
                continue;
            }
            holders.insert(dg, seq);
        }
        let out = Outgoing {
            route: Arc::from(d.route.as_str()),
            topic: Arc::from(d.topic.as_str()),
            partition: d.partition,
            offset: d.offset,
            key,
            dedupe_key: decoded.dedupe_key,
            event: decoded.event,
            usage: decoded.usage.map(Box::new),
            received_at: now,
        };
        to_send
            .entry(d.route.clone())
            .or_default()
            .push(Candidate { seq, out, digest });
    }

    // Deliver route by route; collect delivered keys per (route, topic, partition).
    let mut delivered: BTreeMap<(String, String, i32), CommitBatch> = BTreeMap::new();
    for (route, cands) in &to_send {
        let Some(ReplayRoute { sink, .. }) = routes.get(route.as_str()) else {
            continue;
        };
        let batch: Vec<&Outgoing> = cands.iter().map(|c| &c.out).collect();
        let results = sink.deliver(&batch).await;
        for (c, result) in cands.iter().zip(results) {
            match result {
                Ok(()) => {
                    outcomes.insert(c.seq, ReplayOutcome::Replayed);
                    let (Some(dg), Some(k)) = (c.digest, c.out.dedupe_key.clone()) else {
                        continue;
                    };
                    let b = delivered
                        .entry((route.clone(), c.out.topic.to_string(), c.out.partition))
                        .or_insert_with(|| CommitBatch {
                            route: route.clone(),
                            topic: c.out.topic.to_string(),
                            partition: c.out.partition,
                            first_offset: c.out.offset,
                            next_offset: c.out.offset + 1,
                            ..CommitBatch::default()
                        });
                    b.first_offset = b.first_offset.min(c.out.offset);
                    b.next_offset = b.next_offset.max(c.out.offset + 1);
                    b.keys.push(k);
                    b.digests.push(dg);
                }
                Err(e) => {
                    let class = classify_sink(&e).as_str();
                    outcomes.insert(c.seq, failing(class, e.to_string()));
                }
            }
        }
    }
    for (seq, holder) in behind {
        let outcome = match outcomes.get(&holder) {
            Some(ReplayOutcome::Replayed) => ReplayOutcome::Duplicate,
            _ => failing(
                "permanent",
                format!("same dedupe key as dead letter {holder}, which was not delivered"),
            ),
        };
        outcomes.insert(seq, outcome);
    }

    let now_ms = now.timestamp_millis();
    let mut commit = ReplayCommit {
        delivered: delivered.into_values().collect(),
        ..ReplayCommit::default()
    };
    for (seq, outcome) in &outcomes {
        match outcome {
            ReplayOutcome::Replayed | ReplayOutcome::Duplicate => commit.remove.push(*seq),
            ReplayOutcome::StillFailing { class, reason } => {
                if let Some(d) = by_seq.get(seq) {
                    let mut d = d.clone();
                    d.attempts = d.attempts.saturating_add(1);
                    d.last_seen_ms = now_ms;
                    d.reason = reason.clone();
                    d.class = class.clone();
                    commit.update.push((*seq, d));
                }
            }
        }
    }
    record_in_changelogs(routes, changelog, &commit.delivered).await?;
    store.commit_replay(&commit)?;
    drop(reserved); // committed: the pipeline now sees these keys as duplicates
    for (seq, outcome) in &outcomes {
        match outcome {
            ReplayOutcome::StillFailing { reason, .. } => {
                tracing::warn!(id = seq, "dead letter still failing: {reason}")
            }
            o => tracing::info!(id = seq, outcome = ?o, "dead letter resolved"),
        }
    }
    // Report in the order given (oldest first).
    let outcomes = letters
        .iter()
        .filter_map(|(seq, _)| outcomes.remove(seq).map(|o| (*seq, o)))
        .collect();
    Ok(ReplaySummary { outcomes })
}

/// Digests of the letters' keys that their partition's changelog records
/// as delivered past where this store stopped reading it (the position a
/// restore or this store's own commits reached; the log start without one).
async fn recorded_since(
    routes: &ReplayRoutes,
    store: &Store,
    out: &ReplayProducer<'_>,
    letters: &[(u64, &DeadLetter, Option<Bytes>, Decoded)],
) -> Result<HashSet<u128>, ReplayError> {
    let mut wanted: BTreeMap<(&str, &str, i32, &str), HashSet<String>> = BTreeMap::new();
    for (_, d, _, decoded) in letters {
        let (Some(topic), Some(k)) = (
            routes
                .get(d.route.as_str())
                .and_then(|r| r.changelog_topic.as_deref()),
            &decoded.dedupe_key,
        ) else {
            continue;
        };
        wanted
            .entry((d.route.as_str(), d.topic.as_str(), d.partition, topic))
            .or_default()
            .insert(k.clone());
    }
    let mut found = HashSet::new();
    let mut client = None;
    let stop = CancellationToken::new();
    for ((route, topic, partition, changelog_topic), keys) in wanted {
        let failed = |reason: String| ReplayError::ChangelogRead {
            topic: changelog_topic.to_string(),
            source_topic: topic.to_string(),
            partition,
            reason,
        };
        let kafka = out
            .kafka
            .ok_or_else(|| failed("no Kafka configuration to reach it".into()))?;
        let client: &ClusterClient =
            client.get_or_insert_with(|| ClusterClient::new(kafka.clone()));
        let from = store
            .changelog_position(topic, partition)?
            .filter(|m| m.topic == changelog_topic)
            .map(|m| m.next_offset);
        let src = crate::pipeline::ChangelogSource {
            client,
            route,
            changelog_topic,
            topic,
            partition,
            stop: &stop,
        };
        let keys = crate::pipeline::recorded_keys(&src, from, &keys)
            .await
            .map_err(failed)?;
        found.extend(keys.iter().map(|k| digest(route, k)));
    }
    Ok(found)
}

/// The delivered keys of routes with a changelog topic, produced there
/// before the commit (the pipeline's order).
async fn record_in_changelogs(
    routes: &ReplayRoutes,
    out: &ReplayProducer<'_>,
    delivered: &[CommitBatch],
) -> Result<(), ReplayError> {
    for b in delivered {
        let Some(topic) = routes
            .get(b.route.as_str())
            .and_then(|r| r.changelog_topic.as_deref())
        else {
            continue;
        };
        let failed = |source| ReplayError::Changelog {
            topic: topic.to_string(),
            source,
        };
        let kafka = out.kafka.ok_or_else(|| {
            failed(KafkaError::Invalid(
                "no Kafka configuration to reach it".into(),
            ))
        })?;
        let producer = out
            .producer
            .get_or_try_init(|| Producer::connect(kafka))
            .await
            .map_err(failed)?;
        crate::pipeline::produce_changelog(producer, topic, b)
            .await
            .map_err(failed)?;
    }
    Ok(())
}

/// Keys this replay holds in the pipeline's in-flight set; released on drop
/// (after the commit, or on any early return).
struct Reserved<'a> {
    inflight: Option<&'a InFlight>,
    digests: Vec<u128>,
}

impl Reserved<'_> {
    fn try_reserve(&mut self, digest: u128) -> bool {
        match self.inflight {
            None => true,
            Some(f) if f.try_reserve(digest) => {
                self.digests.push(digest);
                true
            }
            Some(_) => false,
        }
    }
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        if let Some(f) = self.inflight {
            f.release(self.digests.drain(..));
        }
    }
}

fn failing(class: &str, reason: String) -> ReplayOutcome {
    ReplayOutcome::StillFailing {
        class: class.to_string(),
        reason,
    }
}
