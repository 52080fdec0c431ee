//! Crash test: SIGKILL `tally` at random moments while it consumes, restart
//! it each time, and check that every distinct event reached the file sink
//! and that duplicates stay within what the design allows (only a crash
//! between the sink's fsync and the store commit can cause one).
//!
//! Needs scripts/test.sh (broker + Python tools).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

const EVENTS: usize = 20_000;
const DUP_RATIO: f64 = 0.12;
const PARTITIONS: u32 = 4;
const KILLS: usize = 6;
/// Small batches make many commits, so kills land between fsync and commit.
const MAX_BATCH: usize = 64;

fn usage_key(event: &str) -> String {
    let v: Value = serde_json::from_str(event).expect("generated event is JSON");
    format!(
        "{}/{}/{}",
        v["tenantId"].as_str().unwrap(),
        v["subscriptionExternalKey"].as_str().unwrap(),
        v["trackingId"].as_str().unwrap()
    )
}

#[test]
fn sigkill_restarts_lose_nothing_and_duplicate_only_within_bounds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("crash");
    create_topic(&topic, PARTITIONS);
    let config = write_file_sink_config(
        dir.path(),
        &[&topic],
        "killbill-usage",
        "",
        &format!("\n[pipeline]\nmax_batch_records = {MAX_BATCH}\nprefetch_batches = 1\n"),
    );
    add_kafka_setting(&config, "fetch_max_bytes = 16384");
    let config_arg = config.to_str().unwrap().to_string();

    let events = gen_usage(EVENTS, DUP_RATIO, 3, 4242);
    let distinct: BTreeSet<String> = events.iter().map(|e| usage_key(e)).collect();
    let duplicate_events = events.len() - distinct.len();
    assert!(
        duplicate_events * 10 >= events.len(),
        "need >= 10% duplicates, got {duplicate_events}"
    );
    let out = dir.path().join("delivered.jsonl");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut rng = fastrand::Rng::with_seed(seed);
    eprintln!("crash test seed {seed}");

    // Events keep arriving while tally is killed and restarted: an independent
    // producer feeds them, so every kill lands mid-stream however fast this
    // machine consumes.
    // Half is a backlog (kills then land in busy delivery), half streams in.
    let (backlog, stream) = events.split_at(EVENTS / 2);
    produce_jsonl(&topic, backlog, Some("/trackingId"));
    let chunks: Vec<Vec<String>> = stream.chunks(EVENTS / 20).map(<[String]>::to_vec).collect();
    let producer_topic = topic.clone();
    let producer = std::thread::spawn(move || {
        for chunk in chunks {
            produce_jsonl(&producer_topic, &chunk, Some("/trackingId"));
            std::thread::sleep(Duration::from_millis(400));
        }
    });

    let mut kills_mid_stream = 0;
    for k in 1..=KILLS {
        let mut tally = TallyProcess::spawn_in(dir.path(), &["run", "--config", &config_arg], &[]);
        std::thread::sleep(Duration::from_millis(rng.u64(150..700)));
        assert!(
            tally.is_running(),
            "tally exited early:\n{}",
            tally.stderr()
        );
        tally.kill();
        let after = count_lines(&out);
        let keys_so_far: BTreeSet<String> = read_jsonl(&out)
            .iter()
            .filter_map(|l| l["dedupe_key"].as_str().map(str::to_string))
            .collect();
        if !producer.is_finished() || keys_so_far.len() < distinct.len() {
            kills_mid_stream += 1;
        }
        eprintln!(
            "kill {k}: {after} lines, {} distinct keys delivered so far",
            keys_so_far.len()
        );
    }
    producer.join().expect("producer thread");

    // Final run to completion.
    let mut tally = TallyProcess::spawn_in(dir.path(), &["run", "--config", &config_arg], &[]);
    let t0 = Instant::now();
    let done = wait_until(Duration::from_secs(180), || {
        assert!(
            tally.is_running(),
            "tally exited early:\n{}",
            tally.stderr()
        );
        let lines = read_jsonl(&out);
        let keys: BTreeSet<&str> = lines
            .iter()
            .filter_map(|l| l["dedupe_key"].as_str())
            .collect();
        keys.len() >= distinct.len()
    });
    assert!(
        done,
        "final run did not deliver everything in {:?}:\n{}",
        t0.elapsed(),
        tally.stderr()
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        tally.terminate_and_wait(Duration::from_secs(45)).success(),
        "{}",
        tally.stderr()
    );

    let lines = read_jsonl(&out);
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for l in &lines {
        *seen
            .entry(l["dedupe_key"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    let delivered: BTreeSet<String> = seen.keys().cloned().collect();
    let missing: Vec<&String> = distinct.difference(&delivered).collect();
    let unexpected: Vec<&String> = delivered.difference(&distinct).collect();
    let duplicate_lines = lines.len() - delivered.len();
    // At most one unacknowledged-by-the-store batch per partition per crash.
    let bound = kills_mid_stream * PARTITIONS as usize * MAX_BATCH;
    eprintln!(
        "crash test: events={} distinct={} duplicate_events={} kills_mid_stream={} lines={} \
         duplicate_lines={} (bound {}) missing={}",
        events.len(),
        distinct.len(),
        duplicate_events,
        kills_mid_stream,
        lines.len(),
        duplicate_lines,
        bound,
        missing.len()
    );
    assert!(
        missing.is_empty(),
        "{} events lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert!(
        unexpected.is_empty(),
        "unknown keys delivered: {unexpected:?}"
    );
    assert!(
        kills_mid_stream >= 5,
        "only {kills_mid_stream} kills landed mid-stream"
    );
    assert!(
        duplicate_lines <= bound,
        "{duplicate_lines} duplicate lines exceed the bound {bound}"
    );

    // The store agrees: every partition committed to its end.
    let offsets = TallyProcess::run(
        dir.path(),
        &["offsets", "--config", &config_arg, "--json"],
        &[],
        Duration::from_secs(60),
    );
    assert!(offsets.status.success(), "{}", offsets.stderr);
    for row in offsets.json().as_array().unwrap() {
        assert_eq!(row["lag"], 0, "{row}");
    }
}
