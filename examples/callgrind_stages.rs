//! Fixed-input driver for instruction counts (issue #9): runs N Kill Bill
//! usage events (5 % duplicates) through decode → dedupe → commit without the
//! network, each stage in its own non-inlined function so that
//! `callgrind_annotate --inclusive=yes` attributes instructions per stage.
//!
//!   scripts/callgrind.sh [N]      # valgrind + per-record table
//!   cargo run --release --example callgrind_stages -- [N] [PRELOAD]
//!
//! Input: the events of data/sample/usage-events.jsonl with the trackingId
//! rewritten per record (deterministic), so every run sees the same bytes.
//! PRELOAD (default 100,000) IDs are committed before the stages so the
//! lookups run against a non-empty index.

use std::hint::black_box;

use bytes::Bytes;
use tally::config::{DedupeSource, FormatKind};
use tally::format::Decoder;
use tally::store::{CommitBatch, Store, StoreConfig, digest};

const SAMPLE: &str = include_str!("../data/sample/usage-events.jsonl");
const ROUTE: &str = "usage";
/// The pipeline's default `max_batch_records`.
const BATCH: usize = 5000;

fn input(n: usize) -> Vec<Bytes> {
    let templates: Vec<&str> = SAMPLE.lines().filter(|l| !l.trim().is_empty()).collect();
    (0..n)
        .map(|i| {
            // Every 20th record repeats an earlier one: the 5 % duplicates.
            let id = if i % 20 == 19 { i / 2 } else { i };
            let t = templates[id % templates.len()];
            let v: serde_json::Value = serde_json::from_str(t).unwrap_or_default();
            let mut v = v;
            v["trackingId"] = serde_json::Value::String(format!(
                "{:08x}-0000-4000-8000-{:012x}",
                id as u32, id as u64
            ));
            Bytes::from(v.to_string())
        })
        .collect()
}

/// Decode + dedupe digest per record; the decoded events are dropped here
/// (their drop is part of the cost), keys and digests go on.
#[inline(never)]
fn stage_decode(decoder: &Decoder, records: &[Bytes]) -> Vec<(String, u128)> {
    let mut out = Vec::with_capacity(records.len());
    for r in records {
        if let Ok(d) = decoder.decode(None, Some(r))
            && let Some(k) = d.dedupe_key
        {
            let dg = digest(ROUTE, &k);
            out.push((k, dg));
        }
    }
    out
}

/// The same decode with the parsed `UsageEvent` built (what a Kill Bill
/// route does; other sinks skip it): reported beside `stage_decode`.
#[inline(never)]
fn stage_decode_with_usage(decoder: &Decoder, records: &[Bytes]) -> usize {
    let mut n = 0;
    for r in records {
        if let Ok(d) = decoder.decode(None, Some(r))
            && let Some(k) = d.dedupe_key
        {
            black_box((digest(ROUTE, &k), d.usage));
            n += 1;
        }
    }
    n
}

/// A `json` route deduping by a JSON pointer (`/trackingId`), over the
/// same events: the other format's decode, reported beside `stage_decode`.
#[inline(never)]
fn stage_decode_json(decoder: &Decoder, records: &[Bytes]) -> usize {
    let mut n = 0;
    for r in records {
        if let Ok(d) = decoder.decode(None, Some(r))
            && let Some(k) = d.dedupe_key
        {
            black_box(digest(ROUTE, &k));
            n += 1;
        }
    }
    n
}

/// Index lookup per record; keeps the first of each digest (as a round would).
#[inline(never)]
fn stage_dedupe(store: &Store, decoded: Vec<(String, u128)>) -> Vec<(String, u128)> {
    let mut seen = std::collections::HashSet::with_capacity(decoded.len());
    decoded
        .into_iter()
        .filter(|(_, d)| !store.contains(*d) && seen.insert(*d))
        .collect()
}

/// One durable commit (one transaction + flush) per `BATCH` records.
#[inline(never)]
fn stage_commit(store: &Store, fresh: Vec<(String, u128)>, first_offset: i64) -> usize {
    let mut offset = first_offset;
    let mut written = 0;
    let mut it = fresh.into_iter().peekable();
    while it.peek().is_some() {
        let (keys, digests): (Vec<String>, Vec<u128>) = it.by_ref().take(BATCH).unzip();
        let next = offset + keys.len() as i64;
        let batch = CommitBatch {
            route: ROUTE.into(),
            topic: "usage".into(),
            partition: 0,
            first_offset: offset,
            next_offset: next,
            keys,
            digests,
            dead_letters: Vec::new(),
            changelog: None,
        };
        match store.commit(std::slice::from_ref(&batch)) {
            Ok(s) => written += s.ids_written,
            Err(e) => {
                eprintln!("commit failed: {e}");
                std::process::exit(1);
            }
        }
        offset = next;
    }
    written
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args.first().and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let preload: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("tempdir: {e}");
            std::process::exit(1);
        }
    };
    let store = match Store::open(&StoreConfig::new(dir.path().join("store"))) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("store open: {e}");
            std::process::exit(1);
        }
    };
    // Preload on another partition with keys no input record has.
    let pre: Vec<(String, u128)> = (0..preload)
        .map(|i| {
            let k = format!("preload/{i}");
            let d = digest(ROUTE, &k);
            (k, d)
        })
        .collect();
    for chunk in pre.chunks(BATCH) {
        let (keys, digests) = chunk.iter().cloned().unzip();
        let b = CommitBatch {
            route: ROUTE.into(),
            topic: "preload".into(),
            partition: 0,
            first_offset: 0,
            next_offset: 0,
            keys,
            digests,
            dead_letters: Vec::new(),
            changelog: None,
        };
        if let Err(e) = store.commit(&[b]) {
            eprintln!("preload: {e}");
            std::process::exit(1);
        }
    }
    let records = input(n);
    let full = Decoder::new(FormatKind::KillbillUsage, DedupeSource::Format);
    black_box(stage_decode_with_usage(&full, &records));
    let json = Decoder::new(
        FormatKind::Json,
        DedupeSource::Pointer("/trackingId".into()),
    );
    black_box(stage_decode_json(&json, &records));
    // A file/HTTP/AMQP route: no parsed event (Decoder::for_route decides).
    let decoder = full.keep_usage(false);
    let decoded = stage_decode(&decoder, &records);
    let fresh = stage_dedupe(&store, decoded);
    let written = black_box(stage_commit(&store, fresh, 0));
    println!("records {n} written {written} preloaded {preload}");
}
