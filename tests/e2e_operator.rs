//! End to end: the operator surface — /metrics scraped during a run, lag
//! while the sink is down, readiness, the token, publishing, reset-offsets,
//! and the tracking-ID commands — with the real binary and broker.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use support::admin_http::{admin_up, free_port, get, http, metric, scrape};
use support::*;

const RUN_TIMEOUT: Duration = Duration::from_secs(90);
const EXIT_TIMEOUT: Duration = Duration::from_secs(45);
const CMD_TIMEOUT: Duration = Duration::from_secs(60);
const TOKEN: &str = "op-test-token";

fn usage_key(event: &str) -> String {
    let v: Value = serde_json::from_str(event).expect("generated event is JSON");
    format!(
        "{}/{}/{}",
        v["tenantId"].as_str().unwrap(),
        v["subscriptionExternalKey"].as_str().unwrap(),
        v["trackingId"].as_str().unwrap()
    )
}

/// A file-sink config with `[admin]` (and anything in `extra`).
fn config(dir: &Path, topic: &str, port: u16, admin_extra: &str, extra: &str) -> PathBuf {
    let admin = format!("[admin]\nlisten = \"127.0.0.1:{port}\"\n{admin_extra}");
    // `extra` may hold tables; [admin] comes last so its keys stay its own.
    write_file_sink_config(
        dir,
        &[topic],
        "killbill-usage",
        "",
        &format!("{extra}\n{admin}"),
    )
}

fn tally(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> TallyOutput {
    TallyProcess::run(dir, args, envs, CMD_TIMEOUT)
}

fn spawn_run(dir: &Path, cfg: &Path, port: u16, envs: &[(&str, &str)]) -> TallyProcess {
    let mut p = TallyProcess::spawn_in(dir, &["run", "--config", cfg.to_str().unwrap()], envs);
    wait_for("admin API to listen", RUN_TIMEOUT, || {
        assert!(p.is_running(), "tally exited early:\n{}", p.stderr());
        admin_up(port)
    });
    p
}

#[test]
fn metrics_match_what_was_produced_and_delivered() {
    let topic = unique_topic("op-metrics");
    create_topic(&topic, 3);
    let events = gen_usage(300, 0.1, 2, 11);
    let distinct: BTreeSet<String> = events.iter().map(|e| usage_key(e)).collect();
    produce_jsonl(&topic, &events, Some("/trackingId"));
    produce_raw(&topic, b"not json at all", Some("bad-1"));
    produce_raw(&topic, b"{\"trackingId\": 5}", Some("bad-2"));
    let total = events.len() + 2;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = config(dir.path(), &topic, port, "", "");
    let cfg_s = cfg.to_str().unwrap();
    let mut p = spawn_run(dir.path(), &cfg, port, &[]);

    // Scrape until the counters account for every record produced.
    let mut text = String::new();
    let settled = wait_until(RUN_TIMEOUT, || {
        text = scrape(port);
        let lag = metric(&text, "tally_partition_lag", &[&topic]).unwrap_or(-1.0);
        let committed = metric(&text, "tally_partition_committed_offset", &[&topic]).unwrap_or(0.0);
        lag == 0.0 && committed == total as f64
    });
    assert!(
        settled,
        "not settled; last scrape:\n{text}\nstderr:\n{}",
        p.stderr()
    );
    let r = |o: &str| {
        metric(
            &text,
            "tally_records_total",
            &["route=\"main\"", &format!("outcome=\"{o}\"")],
        )
    };
    assert_eq!(r("delivered"), Some(distinct.len() as f64), "{text}");
    assert_eq!(
        r("duplicate"),
        Some((events.len() - distinct.len()) as f64),
        "{text}"
    );
    assert_eq!(r("dead_lettered"), Some(2.0), "{text}");
    assert_eq!(r("retried"), Some(0.0), "{text}");
    assert_eq!(
        metric(&text, "tally_partition_high_watermark", &[&topic]),
        Some(total as f64)
    );
    assert_eq!(metric(&text, "tally_partitions_assigned", &[]), Some(3.0));
    assert_eq!(
        metric(&text, "tally_store_ids", &[]),
        Some(distinct.len() as f64)
    );
    assert_eq!(metric(&text, "tally_store_dead_letters", &[]), Some(2.0));
    assert!(metric(&text, "tally_store_size_bytes", &[]).unwrap_or(0.0) > 0.0);
    assert!(
        metric(
            &text,
            "tally_sink_request_duration_seconds_count",
            &["sink=\"file\"", "status=\"ok\""]
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{text}"
    );
    assert!(metric(&text, "tally_commit_duration_seconds_count", &[]).unwrap_or(0.0) >= 1.0);
    assert_eq!(
        metric(&text, "tally_route_halted", &["route=\"main\""]),
        Some(0.0)
    );
    assert_eq!(metric(&text, "tally_broker_connected", &[]), Some(1.0));
    assert_eq!(
        count_lines(dir.path().join("delivered.jsonl")),
        distinct.len()
    );

    let (s, body) = get(port, "/healthz");
    assert_eq!(s, 200, "{body}");
    let (s, body) = get(port, "/readyz");
    assert_eq!(s, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["ready"], true);
    // No token configured: the publish endpoint is off, not open.
    let (s, body) = http(
        port,
        "POST",
        &format!("/v1/topics/{topic}/records"),
        &[("Authorization", "Bearer x")],
        "{}",
    );
    assert_eq!(s, 403, "{body}");

    // The state commands answer through the daemon while it holds the store.
    let out = tally(dir.path(), &["offsets", "--config", cfg_s, "--json"], &[]);
    assert!(out.status.success(), "{}", out.stderr);
    let rows = out.json();
    assert_eq!(rows.as_array().unwrap().len(), 3);
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .all(|r| r["lag"] == 0 && r["state"] == "running"),
        "{rows}"
    );
    let out = tally(dir.path(), &["stats", "--config", cfg_s, "--json"], &[]);
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.json()["ids"], distinct.len());
    assert_eq!(out.json()["dead_letters"], 2);
    let out = tally(
        dir.path(),
        &["dlq", "list", "--config", cfg_s, "--json"],
        &[],
    );
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.stdout.lines().count(), 2, "{}", out.stdout);

    assert!(
        p.terminate_and_wait(EXIT_TIMEOUT).success(),
        "{}",
        p.stderr()
    );
}

#[test]
fn lag_grows_and_readiness_drops_while_the_sink_is_down() {
    let topic = unique_topic("op-lag");
    create_topic(&topic, 1);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = config(
        dir.path(),
        &topic,
        port,
        "",
        "[pipeline]\nprefetch_batches = 1\nretry_initial = \"100ms\"\nretry_max = \"1s\"\n",
    );
    // Every write to /dev/full fails with ENOSPC: a halt-class failure.
    let text = std::fs::read_to_string(&cfg).unwrap();
    let out = dir.path().join("delivered.jsonl").display().to_string();
    std::fs::write(&cfg, text.replace(&format!("{out:?}"), "\"/dev/full\"")).unwrap();
    let events = gen_usage(200, 0.0, 1, 5);
    produce_jsonl(&topic, &events[..20], Some("/trackingId"));
    let mut p = spawn_run(dir.path(), &cfg, port, &[]);

    let mut text = String::new();
    let halted = wait_until(RUN_TIMEOUT, || {
        text = scrape(port);
        metric(&text, "tally_route_halted", &["route=\"main\""]) == Some(1.0)
    });
    assert!(halted, "route never halted:\n{text}\n{}", p.stderr());
    let (s, body) = get(port, "/readyz");
    assert_eq!(s, 503, "{body}");
    let ready: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        ready["halted_routes"],
        serde_json::json!(["main"]),
        "{body}"
    );

    // Batches pile up (the window holds one), then only the probe sees the log grow.
    let mut produced = 20;
    for chunk in [30usize, 40, 50] {
        produce_jsonl(
            &topic,
            &events[produced..produced + chunk],
            Some("/trackingId"),
        );
        produced += chunk;
        let want = produced as f64;
        let grew = wait_until(Duration::from_secs(30), || {
            text = scrape(port);
            metric(&text, "tally_partition_lag", &[&topic]) == Some(want)
        });
        assert!(grew, "lag did not reach {want}:\n{text}");
    }
    assert_eq!(
        metric(&text, "tally_partition_committed_offset", &[&topic]),
        Some(0.0)
    );
    assert_eq!(
        metric(&text, "tally_partition_high_watermark", &[&topic]),
        Some(produced as f64)
    );
    assert!(
        metric(&text, "tally_sink_retries_total", &["class=\"halt\""]).unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    assert!(
        metric(&text, "tally_partition_retry_backoff_seconds", &[&topic]).unwrap_or(0.0) > 0.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, "tally_records_total", &["outcome=\"delivered\""]),
        Some(0.0)
    );
    let (_, parts) = get(port, "/v1/partitions");
    assert!(parts.contains("\"state\":\"halted\""), "{parts}");

    assert!(
        p.terminate_and_wait(EXIT_TIMEOUT).success(),
        "{}",
        p.stderr()
    );
    assert!(p.stderr().contains("route halted"), "{}", p.stderr());
}

#[test]
fn publish_endpoint_round_trips_into_the_file_sink() {
    let topic = unique_topic("op-publish");
    create_topic(&topic, 2);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
    let token_file = dir.path().join("token").display().to_string();
    let cfg = config(
        dir.path(),
        &topic,
        port,
        &format!("token_file = {token_file:?}\n"),
        "",
    );
    let mut p = spawn_run(dir.path(), &cfg, port, &[]);
    let path = format!("/v1/topics/{topic}/records");
    let events = gen_usage(2, 0.0, 1, 21);
    let auth = format!("Bearer {TOKEN}");

    let (s, _) = http(port, "POST", &path, &[], &events[0]);
    assert_eq!(s, 401);
    let (s, _) = http(
        port,
        "POST",
        &path,
        &[("Authorization", "Bearer wrong")],
        &events[0],
    );
    assert_eq!(s, 401);
    let (s, body) = http(port, "POST", &path, &[("Authorization", &auth)], "not json");
    assert_eq!(s, 400, "{body}");
    let (s, body) = http(
        port,
        "POST",
        &format!("{path}?key=k-one"),
        &[("Authorization", &auth)],
        &events[0],
    );
    assert_eq!(s, 201, "{body}");
    let first: Value = serde_json::from_str(&body).unwrap();
    let (s, body) = http(
        port,
        "POST",
        &path,
        &[("Authorization", &auth), ("X-Kafka-Key", "k-two")],
        &events[1],
    );
    assert_eq!(s, 201, "{body}");

    let out = dir.path().join("delivered.jsonl");
    wait_for("2 published records delivered", RUN_TIMEOUT, || {
        count_lines(&out) >= 2
    });
    let lines = read_jsonl(&out);
    let keys: BTreeSet<&str> = lines.iter().map(|l| l["key"].as_str().unwrap()).collect();
    assert_eq!(keys, BTreeSet::from(["k-one", "k-two"]));
    let one = lines.iter().find(|l| l["key"] == "k-one").unwrap();
    assert_eq!(one["partition"], first["partition"]);
    assert_eq!(one["offset"], first["offset"]);
    assert_eq!(
        one["event"],
        serde_json::from_str::<Value>(&events[0]).unwrap()
    );

    // And the daemon can say where it went.
    let key = usage_key(&events[0]);
    let enc: String = key.replace('/', "%2F");
    // The sink line is written before the store commit lands: wait for it.
    let mut found = (0, String::new());
    let _ = wait_until(RUN_TIMEOUT, || {
        found = get(port, &format!("/v1/ids/main/{enc}"));
        found.0 == 200
    });
    let (s, body) = found;
    assert_eq!(s, 200, "{body}");
    let loc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(loc["key"], key);
    assert_eq!(loc["partition"], first["partition"]);
    let (s, _) = get(port, "/v1/ids/main/no%2Fsuch%2Fkey");
    assert_eq!(s, 404);
    assert!(
        p.terminate_and_wait(EXIT_TIMEOUT).success(),
        "{}",
        p.stderr()
    );
}

fn offsets_by_partition(dir: &Path, cfg: &str) -> Vec<(i64, i64)> {
    let out = tally(dir, &["offsets", "--config", cfg, "--json"], &[]);
    assert!(out.status.success(), "{}", out.stderr);
    out.json()
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["committed"].as_i64().unwrap(),
                r["log_end"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}

fn wait_delivered(dir: &Path, cfg: &Path, port: u16, expected: usize) {
    let mut p = spawn_run(dir, cfg, port, &[]);
    wait_for("deliveries", RUN_TIMEOUT, || {
        count_lines(dir.join("delivered.jsonl")) >= expected
    });
    wait_for("lag 0", RUN_TIMEOUT, || {
        let text = scrape(port);
        metric(&text, "tally_partition_lag", &[]) == Some(0.0)
    });
    assert!(
        p.terminate_and_wait(EXIT_TIMEOUT).success(),
        "{}",
        p.stderr()
    );
}

#[test]
fn reset_offsets_dry_run_execute_and_refusal_while_running() {
    let topic = unique_topic("op-reset");
    create_topic(&topic, 2);
    let events = gen_usage(60, 0.0, 2, 31);
    let produced = produce_jsonl(&topic, &events, Some("/trackingId"));
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = config(dir.path(), &topic, port, "", "");
    let cfg_s = cfg.to_str().unwrap();
    wait_delivered(dir.path(), &cfg, port, 60);
    let before = offsets_by_partition(dir.path(), cfg_s);
    let ends: Vec<i64> = (0..2)
        .map(|p| produced["partitions"][p.to_string()].as_i64().unwrap())
        .collect();
    assert_eq!(before, vec![(ends[0], ends[0]), (ends[1], ends[1])]);

    // Dry run: prints before/after, changes nothing.
    let out = tally(
        dir.path(),
        &[
            "reset-offsets",
            "--config",
            cfg_s,
            "--topic",
            &topic,
            "--to-earliest",
            "--json",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", out.stderr);
    let plan = out.json();
    assert_eq!(plan["executed"], false);
    for (i, row) in plan["partitions"].as_array().unwrap().iter().enumerate() {
        assert_eq!(row["current"], ends[i], "{plan}");
        assert_eq!(row["new"], 0, "{plan}");
    }
    assert!(out.stderr.contains("dry run"), "{}", out.stderr);
    assert_eq!(offsets_by_partition(dir.path(), cfg_s), before);

    // A future time is the log end (Tansu itself would answer 0).
    let out = tally(
        dir.path(),
        &[
            "reset-offsets",
            "--config",
            cfg_s,
            "--topic",
            &topic,
            "--to-datetime",
            "2999-01-01T00:00:00Z",
            "--json",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.json()["partitions"][0]["new"], ends[0]);
    let out = tally(
        dir.path(),
        &[
            "reset-offsets",
            "--config",
            cfg_s,
            "--topic",
            &topic,
            "--by-duration",
            "1h",
            "--json",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.json()["partitions"][0]["new"], 0, "{}", out.stdout);

    // Refused while the daemon holds the store (exit 3, says to stop it).
    let mut p = spawn_run(dir.path(), &cfg, port, &[]);
    let out = tally(
        dir.path(),
        &[
            "reset-offsets",
            "--config",
            cfg_s,
            "--topic",
            &topic,
            "--to-earliest",
            "--execute",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(3), "{}", out.stderr);
    assert!(out.stderr.contains("stop it first"), "{}", out.stderr);
    assert!(p.terminate_and_wait(EXIT_TIMEOUT).success());
    assert_eq!(offsets_by_partition(dir.path(), cfg_s), before);

    // Execute on the stopped store: partition 0 to 5, then shifted by +2.
    let t0 = format!("{topic}:0");
    let out = tally(
        dir.path(),
        &[
            "reset-offsets",
            "--config",
            cfg_s,
            "--topic",
            &t0,
            "--to-offset",
            "5",
            "--execute",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", out.stderr);
    assert!(out.stdout.contains("NEW-OFFSET"), "{}", out.stdout);
    let out = tally(
        dir.path(),
        &[
            "reset-offsets",
            "--config",
            cfg_s,
            "--topic",
            &topic,
            "--partition",
            "0",
            "--shift-by",
            "2",
            "--execute",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(
        offsets_by_partition(dir.path(), cfg_s),
        vec![(7, ends[0]), before[1]]
    );
    let out = tally(
        dir.path(),
        &[
            "reset-offsets",
            "--config",
            cfg_s,
            "--topic",
            "not-routed",
            "--to-earliest",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);

    // The replay is deduplicated: nothing new in the sink, offsets back at the end.
    let mut p = spawn_run(dir.path(), &cfg, port, &[]);
    wait_for("replay to reach the log end", RUN_TIMEOUT, || {
        let text = scrape(port);
        metric(&text, "tally_records_total", &["outcome=\"duplicate\""])
            == Some((ends[0] - 7) as f64)
            && metric(&text, "tally_partition_lag", &[]) == Some(0.0)
    });
    assert!(p.terminate_and_wait(EXIT_TIMEOUT).success());
    assert_eq!(count_lines(dir.path().join("delivered.jsonl")), 60);
    assert_eq!(offsets_by_partition(dir.path(), cfg_s), before);
}

#[test]
fn ids_lookup_count_export_prune_on_a_known_store() {
    let topic = unique_topic("op-ids");
    create_topic(&topic, 2);
    let events = gen_usage(40, 0.0, 2, 41);
    produce_jsonl(&topic, &events, Some("/trackingId"));
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = config(
        dir.path(),
        &topic,
        port,
        "token_env = \"TALLY_ADMIN_TOKEN\"\n",
        "",
    );
    let cfg_s = cfg.to_str().unwrap();
    let env = [("TALLY_ADMIN_TOKEN", TOKEN)];
    {
        let mut p = spawn_run(dir.path(), &cfg, port, &env);
        wait_for("40 deliveries", RUN_TIMEOUT, || {
            count_lines(dir.path().join("delivered.jsonl")) >= 40
        });
        // Through the daemon's API while it runs. The sink line is written
        // before the store commit lands, so wait for the count to catch up.
        let mut out = tally(
            dir.path(),
            &["ids", "count", "--config", cfg_s, "--json"],
            &[],
        );
        let _ = wait_until(RUN_TIMEOUT, || {
            out = tally(
                dir.path(),
                &["ids", "count", "--config", cfg_s, "--json"],
                &[],
            );
            out.status.success() && out.json()[0]["ids"] == 40
        });
        assert!(out.status.success(), "{}", out.stderr);
        assert_eq!(out.json()[0]["ids"], 40, "{}", out.stdout);
        let key = usage_key(&events[3]);
        let out = tally(
            dir.path(),
            &["ids", "lookup", "--config", cfg_s, &key, "--json"],
            &[],
        );
        assert!(out.status.success(), "{}", out.stderr);
        assert_eq!(out.json()["key"], key);
        let out = tally(dir.path(), &["ids", "export", "--config", cfg_s], &[]);
        assert!(out.status.success(), "{}", out.stderr);
        assert_eq!(out.stdout.lines().count(), 40);
        // Prune through the daemon needs the token in this environment.
        let out = tally(
            dir.path(),
            &["ids", "prune", "--config", cfg_s, "--older-than", "1h"],
            &[("TALLY_ADMIN_TOKEN", "nope")],
        );
        assert!(!out.status.success());
        assert!(out.stderr.contains("401"), "{}", out.stderr);
        assert!(p.terminate_and_wait(EXIT_TIMEOUT).success());
    }
    let delivered = read_jsonl(dir.path().join("delivered.jsonl"));
    assert_eq!(delivered.len(), 40);

    // Directly on the stopped store.
    let out = tally(dir.path(), &["ids", "count", "--config", cfg_s], &[]);
    assert!(out.status.success(), "{}", out.stderr);
    assert!(
        out.stdout.contains("ROUTE") && out.stdout.contains(" 40 "),
        "{}",
        out.stdout
    );
    for line in delivered.iter().take(5) {
        let key = line["dedupe_key"].as_str().unwrap();
        let out = tally(
            dir.path(),
            &[
                "ids", "lookup", "--config", cfg_s, "--route", "main", key, "--json",
            ],
            &[],
        );
        assert!(out.status.success(), "{}", out.stderr);
        let loc = out.json();
        assert_eq!(loc["topic"], topic);
        assert_eq!(loc["partition"], line["partition"]);
        let off = line["offset"].as_i64().unwrap();
        assert!(
            loc["first_offset"].as_i64().unwrap() <= off
                && off < loc["next_offset"].as_i64().unwrap(),
            "{loc} vs {line}"
        );
        assert!(loc["committed_at"].is_string());
    }
    let out = tally(
        dir.path(),
        &["ids", "lookup", "--config", cfg_s, "no/such/key"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stderr.contains("not found"), "{}", out.stderr);

    let out = tally(dir.path(), &["ids", "export", "--config", cfg_s], &[]);
    assert!(out.status.success(), "{}", out.stderr);
    assert!(
        !out.stderr.contains('\r'),
        "progress must stay off when piped: {:?}",
        out.stderr
    );
    let exported: BTreeSet<String> = out
        .stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["key"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let want: BTreeSet<String> = events.iter().map(|e| usage_key(e)).collect();
    assert_eq!(exported, want);

    let out = tally(dir.path(), &["stats", "--config", cfg_s, "--json"], &[]);
    assert!(out.status.success(), "{}", out.stderr);
    let st = out.json();
    assert_eq!(st["ids"], 40);
    assert_eq!(st["partitions"], 2);
    assert_eq!(st["schema_version"], 2);
    assert_eq!(st["dead_letters"], 0);

    let out = tally(
        dir.path(),
        &[
            "ids",
            "prune",
            "--config",
            cfg_s,
            "--older-than",
            "1h",
            "--json",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.json()["ids"], 0);
    std::thread::sleep(Duration::from_millis(1100));
    let out = tally(
        dir.path(),
        &[
            "ids",
            "prune",
            "--config",
            cfg_s,
            "--older-than",
            "1s",
            "--json",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.json()["ids"], 40);
    let out = tally(
        dir.path(),
        &["ids", "count", "--config", cfg_s, "--json"],
        &[],
    );
    assert_eq!(out.json(), serde_json::json!([]));
    let key = delivered[0]["dedupe_key"].as_str().unwrap();
    let out = tally(dir.path(), &["ids", "lookup", "--config", cfg_s, key], &[]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn retention_prunes_while_running() {
    let topic = unique_topic("op-retention");
    create_topic(&topic, 1);
    let events = gen_usage(10, 0.0, 1, 51);
    produce_jsonl(&topic, &events, Some("/trackingId"));
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = config(dir.path(), &topic, port, "", "");
    wait_delivered(dir.path(), &cfg, port, 10);
    // Same store, now with a retention every stored ID is older than.
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replacen("[store]\n", "[store]\nretention = \"1s\"\n", 1),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let mut p = spawn_run(dir.path(), &cfg, port, &[]);
    let mut text = String::new();
    let pruned = wait_until(RUN_TIMEOUT, || {
        text = scrape(port);
        metric(&text, "tally_store_pruned_ids_total", &[]) == Some(10.0)
    });
    assert!(pruned, "{text}\n{}", p.stderr());
    // A scrape after the one that saw the counter: the gauge is read at the
    // start of a scrape, so the one that raced the prune may show the IDs.
    assert_eq!(metric(&scrape(port), "tally_store_ids", &[]), Some(0.0));
    assert!(p.terminate_and_wait(EXIT_TIMEOUT).success());
}

#[test]
fn json_logs_have_one_line_per_state_change() {
    let topic = unique_topic("op-logs");
    create_topic(&topic, 2);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = config(dir.path(), &topic, port, "", "");
    let mut p = TallyProcess::spawn_in(
        dir.path(),
        &[
            "--log-format",
            "json",
            "run",
            "--config",
            cfg.to_str().unwrap(),
        ],
        &[],
    );
    wait_for("2 partitions assigned", RUN_TIMEOUT, || {
        p.stderr().matches("partition assigned").count() >= 2
    });
    assert!(p.terminate_and_wait(EXIT_TIMEOUT).success());
    let logs = p.stderr();
    let mut assigned = 0;
    for line in logs.lines() {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
        if v["message"] == "partition assigned" {
            assigned += 1;
            assert_eq!(v["topic"], topic);
        }
    }
    assert_eq!(assigned, 2, "{logs}");
}
