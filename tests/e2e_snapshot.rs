//! The index snapshot with the real binary (issue #9): a clean stop writes
//! it, the next start loads it (and only the digest log after it) and still
//! skips every key delivered before; after a SIGKILL mid-delivery the
//! restart loads the last clean stop's snapshot plus the log since, and
//! nothing is lost or delivered twice beyond the one in-flight batch per
//! partition a kill between the sink's fsync and the store commit allows.
//!
//! Needs scripts/test.sh (broker + Python tools).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use support::admin_http::{free_port, metric, scrape};
use support::*;

const PARTITIONS: u32 = 4;
/// Small batches make many commits, so the kill lands between them.
const MAX_BATCH: usize = 64;

fn keys_of(events: &[String]) -> BTreeSet<String> {
    events.iter().map(|e| usage_key(e)).collect()
}

/// Lines per dedupe key in the sink file.
fn delivered(out: &Path) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for l in read_jsonl(out) {
        *seen
            .entry(l["dedupe_key"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    seen
}

/// The "opened tally store" line's `snapshot` field (used / none / rejected).
fn snapshot_at_open(log: &str) -> String {
    let log = logs::plain_log(log);
    let line = log
        .lines()
        .find(|l| l.contains("opened tally store"))
        .unwrap_or_else(|| panic!("no open line:\n{}", logs::tail(&log)));
    let at = line.find("snapshot=").unwrap_or_else(|| panic!("{line}")) + "snapshot=".len();
    line[at..]
        .trim_start_matches('"')
        .chars()
        .take_while(char::is_ascii_alphabetic)
        .collect()
}

fn run_until(dir: &Path, config: &str, out: &Path, want: &BTreeSet<String>) -> TallyProcess {
    let mut tally = TallyProcess::spawn_in(dir, &["run", "--config", config], &[]);
    wait_for("every key delivered", Duration::from_secs(120), || {
        assert!(tally.is_running(), "tally exited:\n{}", tally.stderr());
        let got = delivered(out);
        want.iter().all(|k| got.contains_key(k))
    });
    tally
}

#[test]
fn a_clean_stop_writes_the_snapshot_the_next_start_loads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("snapshot");
    create_topic(&topic, PARTITIONS);
    let port = free_port();
    let config = write_file_sink_config(
        dir.path(),
        &[&topic],
        "killbill-usage",
        "",
        &format!(
            "\n[pipeline]\nmax_batch_records = {MAX_BATCH}\nprefetch_batches = 1\n\n[admin]\nlisten = \"127.0.0.1:{port}\"\n"
        ),
    );
    // Small fetches too (as in tests/crash.rs), so run 3 is still
    // delivering when it is killed, however fast the machine.
    add_kafka_setting(&config, "fetch_max_bytes = 16384");
    let config_arg = config.to_str().unwrap().to_string();
    let out = dir.path().join("delivered.jsonl");

    // Run 1: a fresh store; its clean stop writes the snapshot.
    let a = gen_usage(1_500, 0.0, 3, 901);
    let a_keys = keys_of(&a);
    produce_jsonl(&topic, &a, Some("/trackingId"));
    let mut tally = run_until(dir.path(), &config_arg, &out, &a_keys);
    let log = stop_cleanly(&mut tally);
    assert_eq!(snapshot_at_open(&log), "none");
    assert!(log.contains("wrote index snapshot"), "{}", logs::tail(&log));
    assert!(dir.path().join("state/index.snapshot").exists());

    // Run 2: every key of run 1 again plus new ones. The index comes from
    // the snapshot alone (the log has nothing after it), and the old keys
    // are all skipped.
    let b = gen_usage(1_500, 0.0, 3, 902);
    let b_keys = keys_of(&b);
    assert!(a_keys.is_disjoint(&b_keys));
    produce_jsonl(&topic, &a, Some("/trackingId"));
    produce_jsonl(&topic, &b, Some("/trackingId"));
    let mut tally = run_until(dir.path(), &config_arg, &out, &b_keys);
    // Each partition's re-sent keys of run 1 come before its keys of this
    // run, so they are resolved (skipped) by now.
    let log = stop_cleanly(&mut tally);
    assert_eq!(snapshot_at_open(&log), "used", "{}", logs::tail(&log));
    assert!(log.contains("from_log=0"), "{}", logs::tail(&log));
    // The snapshot is the store's own file, not something foreign in it.
    assert!(!log.contains("unexpected files"), "{}", logs::tail(&log));
    assert_eq!(logs::summary_field(&log, "duplicates"), a_keys.len() as u64);
    let got = delivered(&out);
    assert_eq!(got.len(), a_keys.len() + b_keys.len());
    assert!(got.values().all(|n| *n == 1), "a key was delivered twice");

    // Run 3, killed mid-delivery of many small batches; run 4 loads run 2's
    // snapshot plus what run 3 committed after it, from the log.
    let c = gen_usage(20_000, 0.0, 3, 903);
    let c_keys = keys_of(&c);
    assert!(c_keys.is_disjoint(&a_keys) && c_keys.is_disjoint(&b_keys));
    produce_jsonl(&topic, &a, Some("/trackingId"));
    produce_jsonl(&topic, &b, Some("/trackingId"));
    produce_jsonl(&topic, &c, Some("/trackingId"));
    let before = count_lines(&out);
    let mut tally = TallyProcess::spawn_in(dir.path(), &["run", "--config", &config_arg], &[]);
    wait_for("run 3 delivering", Duration::from_secs(60), || {
        assert!(tally.is_running(), "tally exited:\n{}", tally.stderr());
        count_lines(&out) >= before + 500
    });
    tally.kill();
    let at_kill = delivered(&out);
    eprintln!(
        "killed run 3 with {} of {} new keys delivered",
        c_keys.iter().filter(|k| at_kill.contains_key(*k)).count(),
        c_keys.len()
    );
    assert!(
        c_keys.iter().any(|k| !at_kill.contains_key(k)),
        "run 3 finished before the kill"
    );
    let mut tally = run_until(dir.path(), &config_arg, &out, &c_keys);
    // Every partition resolved to its end (what `assert_fully_committed`
    // reads after the stop).
    wait_for(
        "every partition resolved to its end",
        Duration::from_secs(60),
        || {
            assert!(tally.is_running(), "tally exited:\n{}", tally.stderr());
            metric(&scrape(port), "tally_partition_lag", &[]) == Some(0.0)
        },
    );
    let log = stop_cleanly(&mut tally);
    assert_eq!(snapshot_at_open(&log), "used", "{}", logs::tail(&log));
    assert!(!log.contains("from_log=0"), "{}", logs::tail(&log));
    assert_fully_committed(dir.path(), &config);

    let got = delivered(&out);
    let all: BTreeSet<String> = a_keys
        .iter()
        .chain(&b_keys)
        .chain(&c_keys)
        .cloned()
        .collect();
    assert_eq!(got.keys().cloned().collect::<BTreeSet<_>>(), all);
    // Keys of the snapshot: never again, whatever was killed.
    for k in a_keys.iter().chain(&b_keys) {
        assert_eq!(got[k], 1, "{k} delivered again");
    }
    // Keys in flight at the kill: at most one batch per partition again.
    let again: usize = c_keys.iter().map(|k| got[k] - 1).sum();
    assert!(
        again <= PARTITIONS as usize * MAX_BATCH,
        "{again} lines delivered twice"
    );
}
