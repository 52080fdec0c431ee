//! Criterion benches for the per-record hot paths (issue #9): decode
//! (`killbill-usage` fast and checked, `json`), dedupe lookup in the store
//! index, a durable batch commit (IDs + offset in one transaction, one
//! flush), and the in-flight tracker a round reserves and releases.
//!
//!   cargo bench --bench hot_paths                 # all, ~1 s of measurement each
//!   cargo bench --bench hot_paths -- decode/      # a filter
//!
//! Timings are noisy on a shared box; `scripts/callgrind.sh` gives
//! repeatable instruction counts for decode + dedupe + commit.

use std::time::Duration;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

use tally::config::{DedupeSource, FormatKind};
use tally::format::{Decoder, killbill_checked_path, killbill_fast_path};
use tally::pipeline::InFlight;
use tally::store::{CommitBatch, DigestIndex, Store, StoreConfig, digest};

const SAMPLE: &str = include_str!("../data/sample/usage-events.jsonl");

fn events() -> Vec<Bytes> {
    SAMPLE
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| Bytes::copy_from_slice(l.as_bytes()))
        .collect()
}

/// Uniform digests like xxh3 output, reproducible.
fn digests(n: usize, seed: u64) -> Vec<u128> {
    (0..n as u64)
        .map(|i| xxhash_rust::xxh3::xxh3_128(&(i ^ (seed << 40)).to_le_bytes()))
        .collect()
}

fn decode(c: &mut Criterion) {
    let events = events();
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(events.len() as u64));
    g.bench_function("killbill-usage/fast", |b| {
        b.iter(|| {
            for e in &events {
                black_box(killbill_fast_path(e));
            }
        })
    });
    g.bench_function("killbill-usage/checked", |b| {
        b.iter(|| {
            for e in &events {
                black_box(killbill_checked_path(e).ok());
            }
        })
    });
    let kb = Decoder::new(FormatKind::KillbillUsage, DedupeSource::Format);
    g.bench_function("killbill-usage/decoder+digest", |b| {
        b.iter(|| {
            for e in &events {
                if let Ok(d) = kb.decode(None, Some(e)) {
                    black_box(d.dedupe_key.map(|k| digest("usage", &k)));
                }
            }
        })
    });
    let json = Decoder::new(
        FormatKind::Json,
        DedupeSource::Pointer("/trackingId".into()),
    );
    g.bench_function("json/pointer", |b| {
        b.iter(|| {
            for e in &events {
                black_box(json.decode(None, Some(e)).ok());
            }
        })
    });
    g.finish();
}

fn dedupe_lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("dedupe_lookup");
    for n in [100_000usize, 1_000_000] {
        let stored = digests(n, 1);
        let mut index = DigestIndex::with_expected(n);
        for d in &stored {
            index.insert(*d);
        }
        // Mostly new records (the common case), 5 % hits.
        let probes: Vec<u128> = digests(10_000, 2)
            .into_iter()
            .enumerate()
            .map(|(i, d)| if i % 20 == 0 { stored[i * 7 % n] } else { d })
            .collect();
        g.throughput(Throughput::Elements(probes.len() as u64));
        g.bench_function(format!("index/{n}"), |b| {
            b.iter(|| probes.iter().filter(|d| index.contains(**d)).count())
        });
    }
    g.finish();
}

fn commit(c: &mut Criterion) {
    let mut g = c.benchmark_group("commit");
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    };
    let store = match Store::open(&StoreConfig::new(dir.path().join("store"))) {
        Ok(s) => s,
        Err(e) => panic!("store open: {e}"),
    };
    // One store for both sizes: offsets keep moving forward (a commit may
    // never move a partition's offset back) and the seeds never repeat (a
    // repeated digest would be skipped as a duplicate, not written).
    let mut next = 0i64;
    let mut seed = 0u64;
    for per_batch in [100usize, 1000] {
        g.throughput(Throughput::Elements(per_batch as u64));
        g.bench_function(format!("durable/{per_batch}_ids"), |b| {
            b.iter_batched(
                || {
                    seed += 1;
                    let ds = digests(per_batch, 1000 + seed);
                    let keys = ds.iter().map(|d| format!("tenant/sub/{d:032x}")).collect();
                    let first = next;
                    next += per_batch as i64;
                    vec![CommitBatch {
                        route: "usage".into(),
                        topic: "usage".into(),
                        partition: 0,
                        first_offset: first,
                        next_offset: next,
                        keys,
                        digests: ds,
                        dead_letters: Vec::new(),
                        changelog: None,
                    }]
                },
                |batches| match store.commit(&batches) {
                    Ok(s) => black_box(s),
                    Err(e) => panic!("commit: {e}"),
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn inflight(c: &mut Criterion) {
    let mut g = c.benchmark_group("inflight_tracker");
    let round = digests(500, 3);
    g.throughput(Throughput::Elements(round.len() as u64));
    let tracker = InFlight::default();
    g.bench_function("reserve+release/500", |b| {
        b.iter(|| {
            let reserved: Vec<u128> = round
                .iter()
                .copied()
                .filter(|d| tracker.try_reserve(*d))
                .collect();
            tracker.release(reserved);
        })
    });
    g.finish();
}

fn quick() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20)
}

criterion_group! {
    name = hot_paths;
    config = quick();
    targets = decode, dedupe_lookup, commit, inflight
}
criterion_main!(hot_paths);
