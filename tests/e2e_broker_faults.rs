//! The broker goes away mid-stream: tally reconnects with backoff and still
//! delivers every event exactly once. Uses its own broker behind a cuttable
//! TCP proxy (the broker advertises the proxy's address), so a cut drops
//! every connection tally has without losing the broker's data.
//!
//! Needs scripts/test.sh (TALLY_TANSU_BIN and the Python tools).

mod support;

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::proxy::CuttableProxy;
use support::*;

struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A private Tansu listening on its own port but advertising the proxy's.
fn broker_behind_proxy() -> (Broker, CuttableProxy, String) {
    let tansu =
        std::env::var("TALLY_TANSU_BIN").expect("TALLY_TANSU_BIN is not set: run scripts/test.sh");
    let port = free_port();
    let upstream: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let proxy = CuttableProxy::start("127.0.0.1:0", upstream);
    let advertised = proxy.addr().to_string();
    let child = Command::new(tansu)
        .args([
            "broker",
            "--cluster-id",
            "tally-faults",
            "--listener-url",
            &format!("tcp://{upstream}"),
            "--advertised-listener-url",
            &format!("tcp://{advertised}"),
            "--storage-engine",
            "memory://tansu/",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tansu");
    let broker = Broker(child);
    run_kafka_tool(&["wait-broker", "--broker", &advertised], None);
    (broker, proxy, advertised)
}

fn produce_to(addr: &str, topic: &str, lines: &[String]) {
    let mut input = lines.join("\n");
    input.push('\n');
    let v = run_kafka_tool(
        &[
            "produce",
            "--broker",
            addr,
            "--topic",
            topic,
            "--key-pointer",
            "/trackingId",
        ],
        Some(input.as_bytes()),
    );
    assert_eq!(v["failed"], 0, "{v}");
}

fn usage_key(event: &str) -> String {
    let v: Value = serde_json::from_str(event).unwrap();
    format!(
        "{}/{}/{}",
        v["tenantId"].as_str().unwrap(),
        v["subscriptionExternalKey"].as_str().unwrap(),
        v["trackingId"].as_str().unwrap()
    )
}

#[test]
fn connection_loss_mid_stream_is_survived_exactly_once() {
    let (_broker, proxy, addr) = broker_behind_proxy();
    let topic = unique_topic("faults");
    run_kafka_tool(
        &[
            "create-topic",
            "--broker",
            &addr,
            "--topic",
            &topic,
            "--partitions",
            "3",
        ],
        None,
    );
    let first = gen_usage(3000, 0.05, 2, 51);
    produce_to(&addr, &topic, &first);

    let dir = tempfile::tempdir().unwrap();
    let config = write_file_sink_config(
        dir.path(),
        &[&topic],
        "killbill-usage",
        "",
        "\n[pipeline]\nmax_batch_records = 100\nretry_initial = \"50ms\"\nretry_max = \"1s\"\n",
    );
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[kafka]\n",
        "[kafka]\nfetch_max_bytes = 8192\nrequest_timeout = \"3s\"\nconnect_timeout = \"2s\"\n",
    );
    std::fs::write(&config, text).unwrap();
    let out = dir.path().join("delivered.jsonl");
    let mut tally = TallyProcess::spawn_in(
        dir.path(),
        &["run", "--config", config.to_str().unwrap()],
        &[("TALLY_BROKERS", addr.as_str())],
    );
    assert!(
        wait_until(Duration::from_secs(60), || count_lines(&out) > 100),
        "no progress before the cut:\n{}",
        tally.stderr()
    );

    // Cut every connection for 3 s: fetches fail, reconnects are refused.
    proxy.cut();
    std::thread::sleep(Duration::from_secs(3));
    let during = count_lines(&out);
    assert!(
        tally.is_running(),
        "tally died on connection loss:\n{}",
        tally.stderr()
    );
    proxy.restore();

    let second = gen_usage(1000, 0.0, 2, 52);
    produce_to(&addr, &topic, &second);
    let distinct: BTreeSet<String> = first.iter().chain(&second).map(|e| usage_key(e)).collect();
    let done = wait_until(Duration::from_secs(90), || {
        count_lines(&out) >= distinct.len()
    });
    assert!(
        done,
        "{} of {} delivered after the cut:\n{}",
        count_lines(&out),
        distinct.len(),
        tally.stderr()
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        tally.terminate_and_wait(Duration::from_secs(45)).success(),
        "{}",
        tally.stderr()
    );

    let lines = read_jsonl(&out);
    let keys: Vec<String> = lines
        .iter()
        .map(|l| l["dedupe_key"].as_str().unwrap().to_string())
        .collect();
    let got: BTreeSet<String> = keys.iter().cloned().collect();
    assert_eq!(keys.len(), got.len(), "duplicates after reconnect");
    assert_eq!(got, distinct);
    let log = tally.stderr();
    assert!(
        log.contains("fetch failed"),
        "the cut was not noticed (delivered {during} during it):\n{log}"
    );
}

#[test]
fn a_topic_created_after_start_is_picked_up_by_metadata_refresh() {
    let topic = unique_topic("late-topic");
    let dir = tempfile::tempdir().unwrap();
    let config = write_file_sink_config(dir.path(), &[&topic], "killbill-usage", "", "");
    add_kafka_setting(&config, r#"metadata_refresh = "1s""#);
    let out = dir.path().join("delivered.jsonl");
    let mut tally = TallyProcess::spawn_in(
        dir.path(),
        &["run", "--config", config.to_str().unwrap()],
        &[],
    );
    assert!(
        wait_until(Duration::from_secs(30), || tally
            .stderr()
            .contains("not found")),
        "missing topic not reported:\n{}",
        tally.stderr()
    );
    create_topic(&topic, 3);
    let events = gen_usage(300, 0.0, 1, 61);
    produce_jsonl(&topic, &events, Some("/trackingId"));
    assert!(
        wait_until(Duration::from_secs(60), || count_lines(&out)
            >= events.len()),
        "{} of {} delivered:\n{}",
        count_lines(&out),
        events.len(),
        tally.stderr()
    );
    assert!(tally.terminate_and_wait(Duration::from_secs(45)).success());
    let partitions: BTreeSet<i64> = read_jsonl(&out)
        .iter()
        .map(|l| l["partition"].as_i64().unwrap())
        .collect();
    assert_eq!(
        partitions.len(),
        3,
        "not every partition was consumed: {partitions:?}"
    );
}

#[test]
fn start_latest_skips_what_was_there_before_the_first_start() {
    let topic = unique_topic("latest");
    create_topic(&topic, 2);
    let old = gen_usage(100, 0.0, 1, 71);
    produce_jsonl(&topic, &old, Some("/trackingId"));
    let dir = tempfile::tempdir().unwrap();
    let config = write_file_sink_config(dir.path(), &[&topic], "killbill-usage", "", "");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("start = \"earliest\"", "start = \"latest\"");
    std::fs::write(&config, text).unwrap();
    let out = dir.path().join("delivered.jsonl");
    let mut tally = TallyProcess::spawn_in(
        dir.path(),
        &["run", "--config", config.to_str().unwrap()],
        &[],
    );
    assert!(
        wait_until(Duration::from_secs(30), || tally
            .stderr()
            .matches("partition assigned")
            .count()
            == 2),
        "{}",
        tally.stderr()
    );
    // The start position is committed at once: a crash now must not move it.
    tally.kill();
    let new = gen_usage(50, 0.0, 1, 72);
    produce_jsonl(&topic, &new, Some("/trackingId"));
    let mut tally = TallyProcess::spawn_in(
        dir.path(),
        &["run", "--config", config.to_str().unwrap()],
        &[],
    );
    assert!(
        wait_until(Duration::from_secs(60), || count_lines(&out) >= new.len()),
        "{}",
        tally.stderr()
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(tally.terminate_and_wait(Duration::from_secs(45)).success());
    let got: BTreeSet<String> = read_jsonl(&out)
        .iter()
        .map(|l| l["dedupe_key"].as_str().unwrap().to_string())
        .collect();
    let want: BTreeSet<String> = new.iter().map(|e| usage_key(e)).collect();
    assert_eq!(got, want);
}
