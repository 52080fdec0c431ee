//! Smoke test of the test rig itself: broker reachable, kafka_tool works,
//! the tally binary can be spawned and reaped. Needs scripts/test.sh.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use support::*;

#[test]
fn produce_and_consume_through_kafka_tool() {
    let topic = unique_topic("rig-smoke");
    let created = create_topic(&topic, 3);
    assert_eq!(created["partitions"], 3, "{created}");

    let lines: Vec<String> = (0..30)
        .map(|i| format!(r#"{{"id":"e{i}","trackingId":"t{i}","amount":1.{i:02}}}"#))
        .collect();
    let produced = produce_jsonl(&topic, &lines, Some("/trackingId"));
    assert_eq!(produced["count"], 30, "{produced}");

    let consumed = consume_records(&topic, 3, 30, Duration::from_secs(30));
    assert_eq!(consumed["count"], 30, "{consumed}");
    let got: BTreeSet<String> = consumed["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| r["value"].as_str().expect("value").to_owned())
        .collect();
    assert_eq!(got, lines.iter().cloned().collect::<BTreeSet<_>>());
    // Keys come from the JSON pointer; amounts are passed through as text.
    for r in consumed["records"].as_array().unwrap() {
        let v: Value = serde_json::from_str(r["value"].as_str().unwrap()).unwrap();
        assert_eq!(r["key"], v["trackingId"]);
    }
    // The same key always lands on the same partition.
    let again = produce_jsonl(&topic, &lines[..1], Some("/trackingId"));
    let first = consumed["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == "t0")
        .unwrap();
    let part = first["partition"].to_string();
    assert_eq!(again["partitions"][part.as_str()], 1, "{again}");
}

#[test]
fn gen_usage_is_deterministic_and_keeps_decimal_text() {
    let a = gen_usage(200, 0.1, 3, 42);
    let b = gen_usage(200, 0.1, 3, 42);
    assert_eq!(a, b);
    assert_eq!(a.len(), 200);
    let keys: BTreeSet<(String, String, String)> = a
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["tenantId"].as_str().unwrap().to_owned(),
                v["subscriptionExternalKey"].as_str().unwrap().to_owned(),
                v["trackingId"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(keys.len(), 180, "10% exact duplicates");
    // Amounts are literal decimals with at most 6 fractional digits.
    for l in &a {
        for part in l.split("\"amount\":").skip(1) {
            let lit: String = part
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            let frac = lit.split('.').nth(1).map_or(0, str::len);
            assert!(
                !lit.is_empty() && frac <= 6,
                "amount literal {lit:?} in {l}"
            );
        }
    }
}

#[test]
fn tally_process_spawns_and_is_reaped() {
    let mut p = TallyProcess::spawn(&["--help"]);
    let status = p
        .wait_timeout(Duration::from_secs(30))
        .expect("tally --help exits");
    assert!(status.success(), "tally --help: {status}\n{}", p.stderr());
    assert!(!p.is_running());
    p.terminate(); // no-op on an exited process
    assert_eq!(p.kill().code(), status.code());
}

#[test]
fn read_jsonl_ignores_a_partial_last_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.jsonl");
    assert!(read_jsonl(&path).is_empty());
    std::fs::write(&path, "{\"a\":1}\n{\"a\":2}\n{\"a\":").unwrap();
    let v = read_jsonl(&path);
    assert_eq!(v.len(), 2);
    assert_eq!(count_lines(&path), 2);
    let mut n = 0;
    assert!(wait_until(Duration::from_secs(1), || {
        n += 1;
        n == 3
    }));
    assert!(!wait_until(Duration::from_millis(50), || false));
}
