//! End to end: the real `tally` binary against the test broker, events
//! produced by an independent client (confluent-kafka), delivered to the
//! file sink. Needs scripts/test.sh (broker + Python tools).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use support::*;

const RUN_TIMEOUT: Duration = Duration::from_secs(90);
const EXIT_TIMEOUT: Duration = Duration::from_secs(45);

/// Start tally, wait until the sink holds `expected` lines and stays there,
/// stop it with SIGTERM and check it exited 0.
fn run_until_delivered(dir: &Path, config: &Path, expected: usize) -> Vec<Value> {
    let out = dir.join("delivered.jsonl");
    let mut tally =
        TallyProcess::spawn_in(dir, &["run", "--config", config.to_str().unwrap()], &[]);
    let reached = wait_until(RUN_TIMEOUT, || {
        assert!(
            tally.is_running(),
            "tally exited early:\n{}",
            tally.stderr()
        );
        count_lines(&out) >= expected
    });
    assert!(
        reached,
        "only {} of {expected} lines delivered; stderr:\n{}",
        count_lines(&out),
        tally.stderr()
    );
    // Anything beyond `expected` would be a duplicate: give it a moment to show.
    std::thread::sleep(Duration::from_millis(700));
    let status = tally.terminate_and_wait(EXIT_TIMEOUT);
    assert!(
        status.success(),
        "tally exit {status:?}; stderr:\n{}",
        tally.stderr()
    );
    read_jsonl(&out)
}

fn offsets_json(dir: &Path, config: &Path) -> Vec<Value> {
    let out = TallyProcess::run(
        dir,
        &["offsets", "--config", config.to_str().unwrap(), "--json"],
        &[],
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "offsets failed: {}", out.stderr);
    out.json().as_array().cloned().unwrap_or_default()
}

fn assert_fully_committed(dir: &Path, config: &Path, partitions: usize) {
    let rows = offsets_json(dir, config);
    assert_eq!(rows.len(), partitions, "{rows:?}");
    for row in rows {
        assert_eq!(row["lag"], 0, "partition not fully committed: {row}");
    }
}

fn dedupe_keys(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .map(|l| l["dedupe_key"].as_str().expect("dedupe_key").to_string())
        .collect()
}

fn usage_key(event: &str) -> String {
    let v: Value = serde_json::from_str(event).expect("generated event is JSON");
    format!(
        "{}/{}/{}",
        v["tenantId"].as_str().unwrap(),
        v["subscriptionExternalKey"].as_str().unwrap(),
        v["trackingId"].as_str().unwrap()
    )
}

fn setup(
    prefix: &str,
    partitions: u32,
    format: &str,
    route_extra: &str,
) -> (tempfile::TempDir, String, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic(prefix);
    create_topic(&topic, partitions);
    let config = write_file_sink_config(dir.path(), &[&topic], format, route_extra, "");
    (dir, topic, config)
}

#[test]
fn delivers_each_event_once_and_a_restart_delivers_nothing_again() {
    let (dir, topic, config) = setup("e2e-restart", 4, "killbill-usage", "");
    let events = gen_usage(600, 0.15, 2, 11);
    let distinct: BTreeSet<String> = events.iter().map(|e| usage_key(e)).collect();
    assert!(
        distinct.len() < events.len(),
        "generator made no duplicates"
    );
    produce_jsonl(&topic, &events, Some("/trackingId"));

    let lines = run_until_delivered(dir.path(), &config, distinct.len());
    let keys = dedupe_keys(&lines);
    assert_eq!(keys.len(), distinct.len(), "duplicates delivered");
    assert_eq!(keys.iter().cloned().collect::<BTreeSet<_>>(), distinct);
    assert_fully_committed(dir.path(), &config, 4);

    // Every line carries its origin and the event as JSON, amounts untouched.
    let by_key: BTreeMap<String, &String> = events.iter().map(|e| (usage_key(e), e)).collect();
    for line in &lines {
        assert_eq!(line["topic"], topic.as_str());
        assert!(line["partition"].as_i64().unwrap() < 4);
        assert!(line["offset"].as_i64().unwrap() >= 0);
        let key = line["dedupe_key"].as_str().unwrap();
        let original: Value = serde_json::from_str(by_key[key]).unwrap();
        assert_eq!(line["event"], original);
    }

    // Restart with more input: old duplicates and new events. Only the new ones arrive.
    let more = gen_usage(200, 0.0, 2, 12);
    let mut second: Vec<String> = more.clone();
    second.extend(events.iter().take(50).cloned());
    produce_jsonl(&topic, &second, Some("/trackingId"));
    let new_keys: BTreeSet<String> = more
        .iter()
        .map(|e| usage_key(e))
        .filter(|k| !distinct.contains(k))
        .collect();
    let lines = run_until_delivered(dir.path(), &config, distinct.len() + new_keys.len());
    let keys = dedupe_keys(&lines);
    assert_eq!(
        keys.len(),
        distinct.len() + new_keys.len(),
        "a restart re-delivered something"
    );
    let all: BTreeSet<String> = distinct.union(&new_keys).cloned().collect();
    assert_eq!(keys.into_iter().collect::<BTreeSet<_>>(), all);
    assert_fully_committed(dir.path(), &config, 4);
}

#[test]
fn exact_amounts_survive_byte_for_byte() {
    let (dir, topic, config) = setup("e2e-amounts", 1, "killbill-usage", "");
    let amounts = [
        "0.1",
        "12.345678901234567890123",
        "100000000000000000000000.000001",
        "1e-7",
        "\"42.50\"",
    ];
    let events: Vec<String> = amounts
        .iter()
        .enumerate()
        .map(|(i, a)| {
            format!(
                r#"{{"subscriptionExternalKey":"sub-a","trackingId":"amt-{i}","tenantId":"ten","unitUsageRecords":[{{"unitType":"u","usageRecords":[{{"recordDate":"2026-11-01T10:00:00","amount":{a}}}]}}]}}"#
            )
        })
        .collect();
    produce_jsonl(&topic, &events, None);
    let _ = run_until_delivered(dir.path(), &config, events.len());
    let text = std::fs::read_to_string(dir.path().join("delivered.jsonl")).unwrap();
    for a in amounts {
        assert!(
            text.contains(&format!("\"amount\":{a}")),
            "amount {a} changed:\n{text}"
        );
    }
}

#[test]
fn bad_records_are_skipped_and_do_not_stall_the_partition() {
    let route_extra = format!("max_record_bytes = {CORPUS_MAX_RECORD_BYTES}\n");
    let (dir, topic, config) = setup("e2e-bad", 1, "killbill-usage", &route_extra);
    let good = gen_usage(20, 0.0, 1, 21);
    // Interleave every file of the corpus with good events on one partition;
    // the Kafka key names the file, so each dead letter can be traced to its row.
    let corpus = bad_corpus();
    let bad_dir = repo_root().join("data/bad");
    let mut good_iter = good.iter();
    for entry in &corpus {
        if let Some(g) = good_iter.next() {
            produce_jsonl(&topic, &[g], None);
        }
        let bytes = std::fs::read(bad_dir.join(&entry.file)).unwrap();
        produce_raw(&topic, &bytes, Some(&entry.file));
    }
    let rest: Vec<&String> = good_iter.collect();
    produce_jsonl(&topic, &rest, None);
    // A tombstone (null value) too.
    run_kafka_tool(
        &[
            "produce",
            "--broker",
            &broker(),
            "--topic",
            &topic,
            "--whole",
            "--null-value",
        ],
        Some(b""),
    );

    let good_corpus: Vec<&CorpusEntry> = corpus.iter().filter(|e| e.good).collect();
    let bad_corpus: Vec<&CorpusEntry> = corpus.iter().filter(|e| !e.good).collect();
    let expected = good.len() + good_corpus.len();
    let lines = run_until_delivered(dir.path(), &config, expected);
    assert_eq!(lines.len(), expected);
    assert_fully_committed(dir.path(), &config, 1);
    // Each good corpus record delivered exactly once (keyed by its file name).
    for e in &good_corpus {
        let n = lines.iter().filter(|l| l["key"] == e.file.as_str()).count();
        assert_eq!(n, 1, "good corpus record {} delivered {n} times", e.file);
    }

    // Every rejected record is kept with its reason and origin.
    let out = TallyProcess::run(
        dir.path(),
        &[
            "dlq",
            "list",
            "--config",
            config.to_str().unwrap(),
            "--json",
        ],
        &[],
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", out.stderr);
    let letters: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(letters.len(), bad_corpus.len() + 1, "{}", out.stdout);
    for l in &letters {
        assert_eq!(l["topic"], topic.as_str());
    }
    let mut wrong = Vec::new();
    for e in &bad_corpus {
        let found: Vec<&Value> = letters
            .iter()
            .filter(|l| l["key"] == e.file.as_str())
            .collect();
        match found.as_slice() {
            [l] if l["reason"].as_str().unwrap().contains(&e.reason) => {}
            [l] => wrong.push(format!(
                "{}: reason {} wanted {:?}",
                e.file, l["reason"], e.reason
            )),
            other => wrong.push(format!("{}: {} dead letters", e.file, other.len())),
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
    assert!(
        letters
            .iter()
            .any(|l| l["key"].is_null() && l["reason"] == "record has no value (null/tombstone)"),
        "tombstone not explained: {}",
        out.stdout
    );
    let id = letters[0]["id"].to_string();
    let shown = TallyProcess::run(
        dir.path(),
        &["dlq", "show", "--config", config.to_str().unwrap(), &id],
        &[],
        Duration::from_secs(30),
    );
    assert!(shown.status.success(), "{}", shown.stderr);
    assert!(shown.json()["payload"].is_string() || shown.json()["payload"].is_object());
}

#[test]
fn null_header_values_do_not_hide_good_records() {
    let (dir, topic, config) = setup("e2e-nullhdr", 2, "json", "dedupe = \"/id\"\n");
    let res = run_kafka_tool(
        &[
            "produce-null-header",
            "--broker",
            &broker(),
            "--topic",
            &topic,
            "--count",
            "40",
        ],
        None,
    );
    assert_eq!(res["failed"], 0, "{res}");
    let lines = run_until_delivered(dir.path(), &config, 40);
    assert_eq!(lines.len(), 40);
    assert_fully_committed(dir.path(), &config, 2);
}

#[test]
fn aborted_transactions_are_never_delivered() {
    let (dir, topic, config) = setup("e2e-txn", 1, "json", "dedupe = \"/id\"\n");
    let res = run_kafka_tool(
        &[
            "produce-transactional",
            "--broker",
            &broker(),
            "--topic",
            &topic,
            "--commit",
            "30",
            "--abort",
            "25",
            "--partition",
            "0",
        ],
        None,
    );
    assert_eq!(res["ok"], true, "{res}");
    let expect = res["expect_read_committed"].as_u64().unwrap() as usize;
    let lines = run_until_delivered(dir.path(), &config, expect);
    assert_eq!(lines.len(), expect);
    let kinds: BTreeMap<String, usize> = lines.iter().fold(BTreeMap::new(), |mut m, l| {
        let kind = l["event"]["txn"].as_str().unwrap_or("plain").to_string();
        *m.entry(kind).or_default() += 1;
        m
    });
    assert_eq!(
        kinds.get("abort"),
        None,
        "aborted records delivered: {kinds:?}"
    );
    assert_eq!(kinds.get("commit"), Some(&30), "{kinds:?}");
    assert_fully_committed(dir.path(), &config, 1);
}

#[test]
fn compressed_batches_of_every_codec_are_delivered() {
    let (dir, topic, config) = setup("e2e-codecs", 1, "json", "dedupe = \"/id\"\n");
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        let res = run_kafka_tool(
            &[
                "produce-compressed",
                "--broker",
                &broker(),
                "--topic",
                &topic,
                "--codec",
                codec,
                "--count",
                "150",
            ],
            None,
        );
        assert_eq!(res["failed"], 0, "{codec}: {res}");
    }
    let lines = run_until_delivered(dir.path(), &config, 600);
    let per_codec: BTreeMap<String, usize> = lines.iter().fold(BTreeMap::new(), |mut m, l| {
        *m.entry(l["event"]["codec"].as_str().unwrap().to_string())
            .or_default() += 1;
        m
    });
    assert_eq!(
        per_codec.values().copied().collect::<Vec<_>>(),
        vec![150; 4],
        "{per_codec:?}"
    );
}

#[test]
fn static_members_split_partitions_without_overlap() {
    let topic = unique_topic("e2e-members");
    create_topic(&topic, 6);
    let events = gen_usage(300, 0.0, 1, 31);
    produce_jsonl(&topic, &events, Some("/trackingId"));
    let mut all = Vec::new();
    for member in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let config = write_file_sink_config(dir.path(), &[&topic], "killbill-usage", "", "");
        let text = std::fs::read_to_string(&config).unwrap().replace(
            "member = 0\nmembers = 1",
            &format!("member = {member}\nmembers = 2"),
        );
        std::fs::write(&config, text).unwrap();
        let mut tally = TallyProcess::spawn_in(
            dir.path(),
            &["run", "--config", config.to_str().unwrap()],
            &[],
        );
        // Each member owns partitions p % 2 == member.
        std::thread::sleep(Duration::from_millis(300));
        let out = dir.path().join("delivered.jsonl");
        let mut last = usize::MAX;
        let settled = wait_until(RUN_TIMEOUT, || {
            let n = count_lines(&out);
            let stable = n == last && n > 0;
            last = n;
            std::thread::sleep(Duration::from_millis(500));
            stable
        });
        assert!(
            settled,
            "member {member} delivered nothing; stderr:\n{}",
            tally.stderr()
        );
        assert!(tally.terminate_and_wait(EXIT_TIMEOUT).success());
        let lines = read_jsonl(&out);
        for l in &lines {
            assert_eq!(l["partition"].as_i64().unwrap() % 2, member, "{l}");
        }
        all.extend(dedupe_keys(&lines));
    }
    let distinct: BTreeSet<String> = events.iter().map(|e| usage_key(e)).collect();
    assert_eq!(all.len(), distinct.len());
    assert_eq!(all.into_iter().collect::<BTreeSet<_>>(), distinct);
}

#[test]
fn a_second_process_on_the_same_store_is_refused_quickly() {
    let (dir, _topic, config) = setup("e2e-lock", 1, "killbill-usage", "");
    let mut first = TallyProcess::spawn_in(
        dir.path(),
        &["run", "--config", config.to_str().unwrap()],
        &[],
    );
    assert!(
        wait_until(Duration::from_secs(30), || first
            .stderr()
            .contains("store open")),
        "first tally did not open its store:\n{}",
        first.stderr()
    );
    let started = std::time::Instant::now();
    let second = TallyProcess::run(
        dir.path(),
        &["run", "--config", config.to_str().unwrap()],
        &[],
        Duration::from_secs(20),
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "lock conflict took {:?}",
        started.elapsed()
    );
    assert_eq!(second.status.code(), Some(3), "stderr: {}", second.stderr);
    assert!(
        second.stderr.contains("in use by another tally process"),
        "{}",
        second.stderr
    );

    // `tally health` (the container health check) sees the running daemon...
    let health = |dir: &Path| {
        TallyProcess::run(
            dir,
            &["health", "--config", config.to_str().unwrap()],
            &[],
            Duration::from_secs(20),
        )
    };
    let h = health(dir.path());
    assert!(h.status.success(), "{} {}", h.stdout, h.stderr);
    assert!(first.terminate_and_wait(EXIT_TIMEOUT).success());
    // ...and its absence.
    let h = health(dir.path());
    assert_eq!(h.status.code(), Some(1), "{} {}", h.stdout, h.stderr);
}

#[test]
fn config_errors_name_the_key_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_file_sink_config(dir.path(), &["t"], "killbill-usage", "", "");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("[store]", "[store]\ncache_mb = 5");
    std::fs::write(&config, text).unwrap();
    let out = TallyProcess::run(
        dir.path(),
        &["check", "--config", config.to_str().unwrap()],
        &[],
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("cache_mb"), "{}", out.stderr);

    let good = write_file_sink_config(dir.path(), &["t"], "killbill-usage", "", "");
    let out = TallyProcess::run(
        dir.path(),
        &["check", "--config", good.to_str().unwrap()],
        &[],
        Duration::from_secs(20),
    );
    assert!(out.status.success(), "{}", out.stderr);
    assert!(out.stdout.contains("killbill-usage"), "{}", out.stdout);

    // --connect probes the broker and names a topic that does not exist.
    let missing = unique_topic("no-such-topic");
    let probe_cfg = write_file_sink_config(dir.path(), &[&missing], "killbill-usage", "", "");
    let out = TallyProcess::run(
        dir.path(),
        &[
            "check",
            "--config",
            probe_cfg.to_str().unwrap(),
            "--connect",
        ],
        &[],
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(1), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("# broker: ok"), "{}", out.stdout);
    assert!(
        out.stdout.contains(&format!("# topic {missing}: FAILED")),
        "{}",
        out.stdout
    );
}
