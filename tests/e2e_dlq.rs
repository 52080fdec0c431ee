//! End to end: dead letters caused by config are fixed in config, then
//! `tally dlq replay` delivers them exactly once; `dlq purge` deletes; both
//! refuse while a daemon holds the store. Needs scripts/test.sh (broker + tools).

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::*;

const CMD_TIMEOUT: Duration = Duration::from_secs(60);

fn tally(dir: &Path, args: &[&str]) -> TallyOutput {
    TallyProcess::run(dir, args, &[], CMD_TIMEOUT)
}

fn letters(dir: &Path, config: &str) -> Vec<Value> {
    let out = tally(dir, &["dlq", "list", "--config", config, "--json"]);
    assert!(out.status.success(), "{}", out.stderr);
    out.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn replay_after_a_config_fix_delivers_once_and_purge_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let topic = unique_topic("e2e-dlq-replay");
    create_topic(&topic, 1);
    // Records b1..b3 have no /id: dead letters under `dedupe = "/id"`.
    // b3 repeats b2's /altId; the not-JSON record can never be fixed by config.
    let records: [&[u8]; 7] = [
        br#"{"id":"g1","altId":"a-g1"}"#,
        br#"{"altId":"a-b1","n":1}"#,
        br#"{"id":"g2","altId":"a-g2"}"#,
        br#"{"altId":"a-b2","n":2}"#,
        br#"{"altId":"a-b2","n":3}"#,
        b"not json at all",
        br#"{"id":"g3","altId":"a-g3"}"#,
    ];
    for r in records {
        produce_raw(&topic, r, None);
    }
    let config = write_file_sink_config(d, &[&topic], "json", "dedupe = \"/id\"\n", "");
    let cfg = config.to_str().unwrap();
    let out = d.join("delivered.jsonl");

    let mut daemon = TallyProcess::spawn_in(d, &["run", "--config", cfg], &[]);
    wait_for("3 good records delivered", Duration::from_secs(90), || {
        assert!(daemon.is_running(), "tally exited:\n{}", daemon.stderr());
        count_lines(&out) >= 3
    });
    wait_for("4 dead letters committed", Duration::from_secs(30), || {
        // `dlq list` cannot open the store while the daemon runs: watch the
        // log; the drain on SIGTERM commits whatever is resolved.
        daemon.stderr().matches("kept in dead letters").count() >= 4
    });
    // While the daemon holds the store, replay and purge refuse and say why.
    for args in [
        vec!["dlq", "replay", "--config", cfg, "--all"],
        vec!["dlq", "purge", "--config", cfg, "--older-than", "1s"],
    ] {
        let refused = tally(d, &args);
        assert_eq!(refused.status.code(), Some(3), "{}", refused.stderr);
        assert!(
            refused.stderr.contains("stop the running tally daemon"),
            "{}",
            refused.stderr
        );
    }
    let status = daemon.terminate_and_wait(Duration::from_secs(45));
    assert!(status.success(), "{}", daemon.stderr());
    assert_eq!(count_lines(&out), 3);

    let before = letters(d, cfg);
    assert_eq!(before.len(), 4, "{before:?}");
    assert!(
        before
            .iter()
            .filter(|l| l["reason"].as_str().unwrap().contains("no value at /id"))
            .count()
            == 3,
        "{before:?}"
    );

    // Replaying with the unchanged config changes nothing but attempts.
    let same = tally(d, &["dlq", "replay", "--config", cfg, "--all"]);
    assert_eq!(same.status.code(), Some(1), "{}", same.stderr);
    assert!(
        same.stdout
            .contains("replayed 0, duplicate 0, still failing 4"),
        "{}",
        same.stdout
    );
    assert_eq!(count_lines(&out), 3);

    // The fix: dedupe on a field the records do carry.
    write_file_sink_config(d, &[&topic], "json", "dedupe = \"/altId\"\n", "");
    let fixed = tally(d, &["dlq", "replay", "--config", cfg, "--all"]);
    assert_eq!(fixed.status.code(), Some(1), "{}", fixed.stdout);
    assert!(
        fixed
            .stdout
            .contains("replayed 2, duplicate 1, still failing 1"),
        "{}\n{}",
        fixed.stdout,
        fixed.stderr
    );
    let lines = read_jsonl(&out);
    assert_eq!(lines.len(), 5, "{lines:?}");
    let replayed: Vec<&str> = lines[3..]
        .iter()
        .map(|l| l["dedupe_key"].as_str().unwrap())
        .collect();
    assert_eq!(replayed, ["a-b1", "a-b2"]);

    let left = letters(d, cfg);
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["attempts"], 3);
    assert!(
        left[0]["reason"]
            .as_str()
            .unwrap()
            .contains("not valid JSON"),
        "{left:?}"
    );

    // Again: nothing left to deliver, nothing delivered twice.
    let again = tally(d, &["dlq", "replay", "--config", cfg, "--all"]);
    assert!(
        again
            .stdout
            .contains("replayed 0, duplicate 0, still failing 1"),
        "{}",
        again.stdout
    );
    assert_eq!(count_lines(&out), 5);

    // Purge: age filter keeps a fresh letter; by id removes it.
    let young = tally(d, &["dlq", "purge", "--config", cfg, "--older-than", "1h"]);
    assert!(young.status.success(), "{}", young.stderr);
    assert!(young.stdout.contains("purged 0"), "{}", young.stdout);
    let id = left[0]["id"].to_string();
    let purged = tally(d, &["dlq", "purge", "--config", cfg, &id]);
    assert!(purged.status.success(), "{}", purged.stderr);
    assert!(purged.stdout.contains("purged 1"), "{}", purged.stdout);
    assert!(letters(d, cfg).is_empty());
    let missing = tally(d, &["dlq", "replay", "--config", cfg, &id]);
    assert!(!missing.status.success());
    assert!(
        missing.stderr.contains("no dead letter with id"),
        "{}",
        missing.stderr
    );

    // The daemon, restarted, delivers nothing again: offsets never moved back.
    let mut daemon = TallyProcess::spawn_in(d, &["run", "--config", cfg], &[]);
    std::thread::sleep(Duration::from_secs(3));
    assert!(daemon.is_running(), "{}", daemon.stderr());
    let status = daemon.terminate_and_wait(Duration::from_secs(45));
    assert!(status.success(), "{}", daemon.stderr());
    assert_eq!(count_lines(&out), 5);
    assert!(letters(d, cfg).is_empty());
}

#[test]
fn oversized_and_schema_registry_framed_records() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let topic = unique_topic("e2e-dlq-frame");
    create_topic(&topic, 1);
    let good = gen_usage(4, 0.0, 1, 31);
    let frame = |id: u32, body: &[u8]| {
        let mut v = vec![0u8];
        v.extend_from_slice(&id.to_be_bytes());
        v.extend_from_slice(body);
        v
    };
    // A valid event padded past the limit: refused for its size alone.
    let big = good[3].replacen('{', &format!("{{\"pad\":\"{}\",", "x".repeat(3000)), 1);
    produce_raw(&topic, good[0].as_bytes(), None);
    produce_raw(&topic, &frame(9, good[1].as_bytes()), None);
    produce_raw(&topic, big.as_bytes(), None);
    produce_raw(&topic, &frame(77, b"{\"trackingId\":1}"), None);
    produce_raw(&topic, good[2].as_bytes(), None);
    let config = write_file_sink_config(
        d,
        &[&topic],
        "killbill-usage",
        "max_record_bytes = 2048\n",
        "",
    );
    let cfg = config.to_str().unwrap();
    let out = d.join("delivered.jsonl");
    let mut daemon = TallyProcess::spawn_in(d, &["run", "--config", cfg], &[]);
    wait_for("3 good records delivered", Duration::from_secs(90), || {
        assert!(daemon.is_running(), "tally exited:\n{}", daemon.stderr());
        count_lines(&out) >= 3
    });
    std::thread::sleep(Duration::from_millis(500));
    let status = daemon.terminate_and_wait(Duration::from_secs(45));
    assert!(status.success(), "{}", daemon.stderr());

    let lines = read_jsonl(&out);
    assert_eq!(lines.len(), 3, "{lines:?}");
    // The framed event reaches the sink without its frame.
    let framed_good: Value = serde_json::from_str(&good[1]).unwrap();
    assert_eq!(lines[1]["event"], framed_good);

    let dl = letters(d, cfg);
    assert_eq!(dl.len(), 2, "{dl:?}");
    let reason = |i: usize| dl[i]["reason"].as_str().unwrap().to_string();
    assert!(
        reason(0).contains(&format!(
            "{} bytes, over max_record_bytes = 2048",
            big.len()
        )),
        "{}",
        reason(0)
    );
    assert!(reason(1).contains("schema id 77"), "{}", reason(1));
    // The oversized payload is kept whole, for replay after raising the limit.
    let id = dl[0]["id"].to_string();
    let shown = tally(d, &["dlq", "show", "--config", cfg, &id]);
    assert_eq!(shown.json()["payload"].as_str(), Some(big.as_str()));
    write_file_sink_config(
        d,
        &[&topic],
        "killbill-usage",
        "max_record_bytes = 8192\n",
        "",
    );
    let replay = tally(d, &["dlq", "replay", "--config", cfg, &id]);
    assert!(
        replay.status.success(),
        "{}\n{}",
        replay.stdout,
        replay.stderr
    );
    assert_eq!(count_lines(&out), 4);
}

#[test]
fn records_failing_the_route_schema_are_dead_lettered_with_path_and_rule() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let topic = unique_topic("e2e-dlq-schema");
    create_topic(&topic, 1);
    let good = gen_usage(3, 0.0, 1, 47);
    // Both decode as Kill Bill usage (extra fields are allowed) but break
    // the shipped schema: `subscriptionId` must be a string.
    let with_numeric_subscription_id =
        |event: &str| event.replacen('{', "{\"subscriptionId\":42,", 1);
    let bad = with_numeric_subscription_id(&gen_usage(1, 0.0, 1, 48)[0]);
    let mut framed_bad = vec![0u8, 0, 0, 0, 5];
    framed_bad
        .extend_from_slice(with_numeric_subscription_id(&gen_usage(1, 0.0, 1, 49)[0]).as_bytes());
    produce_raw(&topic, good[0].as_bytes(), None);
    produce_raw(&topic, bad.as_bytes(), None);
    produce_raw(&topic, good[1].as_bytes(), None);
    produce_raw(&topic, &framed_bad, None);
    produce_raw(&topic, good[2].as_bytes(), None);
    let schema =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("data/schemas/killbill-usage.schema.json");
    let route_extra = format!("schema = {:?}\n", schema.display().to_string());
    let config = write_file_sink_config(d, &[&topic], "killbill-usage", &route_extra, "");
    let cfg = config.to_str().unwrap();
    let out = d.join("delivered.jsonl");
    let mut daemon = TallyProcess::spawn_in(d, &["run", "--config", cfg], &[]);
    wait_for(
        "3 good records delivered, 2 dead-lettered",
        Duration::from_secs(90),
        || {
            assert!(daemon.is_running(), "tally exited:\n{}", daemon.stderr());
            count_lines(&out) >= 3 && daemon.stderr().matches("kept in dead letters").count() >= 2
        },
    );
    let status = daemon.terminate_and_wait(Duration::from_secs(45));
    assert!(status.success(), "{}", daemon.stderr());
    assert_eq!(count_lines(&out), 3);

    let dl = letters(d, cfg);
    assert_eq!(dl.len(), 2, "{dl:?}");
    for (letter, offset) in dl.iter().zip([1, 3]) {
        let reason = letter["reason"].as_str().unwrap();
        assert_eq!(letter["offset"], offset, "{letter}");
        assert!(
            reason.contains("fails the route's JSON Schema at /subscriptionId (rule `type`)"),
            "{reason}"
        );
    }
    let framed_reason = dl[1]["reason"].as_str().unwrap();
    assert!(framed_reason.contains("schema id 5"), "{framed_reason}");
}

/// `dlq replay|purge` on a running daemon go through its admin API: the
/// daemon replays with its own routes and dedupe, so a record replayed and
/// the same key arriving live afterwards are delivered once in total.
#[test]
fn replay_and_purge_through_a_running_daemon() {
    const TOKEN: &str = "dlq-test-token";
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let topic = unique_topic("e2e-dlq-daemon");
    create_topic(&topic, 1);
    for r in [
        &br#"{"id":"g1","altId":"a-g1"}"#[..],
        br#"{"altId":"a-b1","n":1}"#,
        br#"{"altId":"a-b2","n":2}"#,
        b"not json at all",
    ] {
        produce_raw(&topic, r, None);
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let admin =
        format!("[admin]\nlisten = \"127.0.0.1:{port}\"\ntoken_env = \"TALLY_ADMIN_TOKEN\"\n");
    let config = write_file_sink_config(d, &[&topic], "json", "dedupe = \"/id\"\n", &admin);
    let cfg = config.to_str().unwrap();
    let out = d.join("delivered.jsonl");
    let env = [("TALLY_ADMIN_TOKEN", TOKEN)];

    let mut daemon = TallyProcess::spawn_in(d, &["run", "--config", cfg], &env);
    wait_for(
        "1 delivered, 3 dead letters",
        Duration::from_secs(90),
        || {
            assert!(daemon.is_running(), "tally exited:\n{}", daemon.stderr());
            count_lines(&out) >= 1 && daemon.stderr().matches("kept in dead letters").count() >= 3
        },
    );
    assert!(daemon.terminate_and_wait(Duration::from_secs(45)).success());

    // The fix needs a restart (config is read at start); the letters stay.
    write_file_sink_config(d, &[&topic], "json", "dedupe = \"/altId\"\n", &admin);
    let mut daemon = TallyProcess::spawn_in(d, &["run", "--config", cfg], &env);
    wait_for(
        "the daemon holds the store and serves its API",
        Duration::from_secs(60),
        || {
            assert!(daemon.is_running(), "tally exited:\n{}", daemon.stderr());
            daemon.stderr().contains("admin API listening")
        },
    );

    // Writing through the API needs the token.
    let refused = TallyProcess::run(
        d,
        &["dlq", "replay", "--config", cfg, "--all"],
        &[("TALLY_ADMIN_TOKEN", "wrong")],
        CMD_TIMEOUT,
    );
    assert!(!refused.status.success());
    assert!(refused.stderr.contains("401"), "{}", refused.stderr);

    let replay = TallyProcess::run(
        d,
        &["dlq", "replay", "--config", cfg, "--all"],
        &env,
        CMD_TIMEOUT,
    );
    assert_eq!(
        replay.status.code(),
        Some(1),
        "{}\n{}",
        replay.stdout,
        replay.stderr
    );
    assert!(
        replay
            .stdout
            .contains("replayed 2, duplicate 0, still failing 1"),
        "{}\n{}",
        replay.stdout,
        replay.stderr
    );
    assert_eq!(count_lines(&out), 3);
    assert!(
        daemon.stderr().contains("dead letter resolved"),
        "{}",
        daemon.stderr()
    );

    // Live now: a key the replay delivered is a duplicate; a new one is delivered.
    produce_raw(&topic, br#"{"altId":"a-b1","n":1}"#, None);
    produce_raw(&topic, br#"{"altId":"a-g4"}"#, None);
    wait_for("the new record delivered", Duration::from_secs(60), || {
        count_lines(&out) >= 4
    });

    let left = letters(d, cfg);
    assert_eq!(left.len(), 1, "{left:?}");
    let id = left[0]["id"].to_string();
    let purged = TallyProcess::run(
        d,
        &["dlq", "purge", "--config", cfg, &id],
        &env,
        CMD_TIMEOUT,
    );
    assert!(purged.status.success(), "{}", purged.stderr);
    assert!(purged.stdout.contains("purged 1"), "{}", purged.stdout);
    assert!(letters(d, cfg).is_empty());
    assert!(daemon.terminate_and_wait(Duration::from_secs(45)).success());

    let lines = read_jsonl(&out);
    let keys: Vec<&str> = lines
        .iter()
        .map(|l| l["dedupe_key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["g1", "a-b1", "a-b2", "a-g4"], "{lines:?}");
}

/// `dead_letter_topic`: each dead letter is also produced to Kafka with its
/// original key and value and `tally.dlq.*` headers, read back here with
/// confluent-kafka (an independent client).
#[test]
fn dead_letters_are_produced_to_the_route_dead_letter_topic() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let topic = unique_topic("e2e-dlq-src");
    let dlq = unique_topic("e2e-dlq-topic");
    create_topic(&topic, 1);
    create_topic(&dlq, 1);
    let mut framed = vec![0u8, 0, 0, 0, 9];
    framed.extend_from_slice(b"\xffnot json");
    produce_raw(&topic, br#"{"id":"g1"}"#, None);
    produce_raw(&topic, br#"{"noId":1}"#, Some("k-1"));
    produce_raw(&topic, &framed, None);
    produce_raw(&topic, br#"{"id":"g2"}"#, None);
    let route_extra = format!("dedupe = \"/id\"\ndead_letter_topic = {dlq:?}\n");
    let config = write_file_sink_config(d, &[&topic], "json", &route_extra, "");
    let cfg = config.to_str().unwrap();
    let out = d.join("delivered.jsonl");
    let mut daemon = TallyProcess::spawn_in(d, &["run", "--config", cfg], &[]);
    wait_for(
        "2 delivered, 2 dead-lettered",
        Duration::from_secs(90),
        || {
            assert!(daemon.is_running(), "tally exited:\n{}", daemon.stderr());
            count_lines(&out) >= 2 && daemon.stderr().matches("kept in dead letters").count() >= 2
        },
    );
    assert!(daemon.terminate_and_wait(Duration::from_secs(45)).success());

    let got = consume_records(&dlq, 1, 2, Duration::from_secs(30));
    let records = got["records"].as_array().cloned().unwrap_or_default();
    assert_eq!(records.len(), 2, "{got}");
    let header = |r: &Value, name: &str| -> Option<String> {
        r["headers"]
            .as_array()?
            .iter()
            .find(|h| h[0] == name)
            .and_then(|h| h[1].as_str().map(str::to_string))
    };
    let first = &records[0];
    assert_eq!(first["key"], "k-1");
    assert_eq!(first["value"], r#"{"noId":1}"#);
    assert_eq!(
        header(first, "tally.dlq.topic").as_deref(),
        Some(topic.as_str())
    );
    assert_eq!(header(first, "tally.dlq.partition").as_deref(), Some("0"));
    assert_eq!(header(first, "tally.dlq.offset").as_deref(), Some("1"));
    assert_eq!(header(first, "tally.dlq.class").as_deref(), Some("decode"));
    assert_eq!(header(first, "tally.dlq.route").as_deref(), Some("main"));
    let reason = header(first, "tally.dlq.reason").unwrap_or_default();
    assert!(reason.contains("no value at /id"), "{reason}");
    let second = &records[1];
    assert_eq!(header(second, "tally.dlq.offset").as_deref(), Some("2"));
    assert_eq!(header(second, "tally.dlq.schema.id").as_deref(), Some("9"));
    // The store has the same two, with the same reasons.
    let stored = letters(d, cfg);
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert_eq!(stored[0]["reason"].as_str(), Some(reason.as_str()));
}
