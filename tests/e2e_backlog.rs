//! End to end: backlog memory. The HTTP sink is down while a backlog many
//! times the fetch-memory budget waits in 64 partitions; tally's peak RSS
//! must stay within the budget's bound over its own idle footprint (no
//! buffering beyond `[pipeline] fetch_memory_mb`). Then the sink comes back
//! and every record is delivered exactly once.
//! Needs scripts/test.sh (broker + Python tools).

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::admin_http::{admin_up, free_port, metric, scrape};
use support::http_receiver::HttpReceiver;
use support::*;

const PARTITIONS: u32 = 64;
const RECORDS: usize = 24_000;
/// Large values, so that fetch windows, not per-record overhead, dominate.
const VALUE_BYTES: usize = 2048;
const BUDGET_MB: u64 = 8;
const MIB: u64 = 1 << 20;
/// Generous: a loaded 2-core machine runs the broker, tally and the tests.
const TIMEOUT: Duration = Duration::from_secs(240);

fn config(dir: &Path, topic: &str, url: &str, port: u16) -> PathBuf {
    let text = format!(
        r#"[kafka]
brokers = [{broker:?}]

[store]
path = {store:?}

[assignment]
mode = "static"
member = 0
members = 1

[pipeline]
fetch_memory_mb = {BUDGET_MB}
retry_max = "1s"

[[routes]]
name = "hook"
topics = [{topic:?}]
format = "json"
dedupe = "/id"
sink = "http"
start = "earliest"

[sinks.http]
url = {url:?}
# The body is the record's value itself (no envelope copy per attempt),
# so what the outage holds is what the fetch budget accounts for.
envelope = false

[admin]
listen = "127.0.0.1:{port}"
"#,
        broker = broker(),
        store = dir.join("state").display().to_string(),
    );
    let path = dir.join("tally.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// A `/proc/PID/status` field in KiB (VmHWM: peak resident set).
fn status_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} missing in /proc/{pid}/status"))
}

fn gauge(port: u16, name: &str) -> f64 {
    metric(&scrape(port), name, &[]).unwrap_or(0.0)
}

fn spawn(dir: &Path, cfg: &Path, port: u16) -> TallyProcess {
    let mut tally = TallyProcess::spawn_in(dir, &["run", "--config", cfg.to_str().unwrap()], &[]);
    wait_for("all partitions assigned", TIMEOUT, || {
        assert!(
            tally.is_running(),
            "tally exited early:\n{}",
            tally.stderr()
        );
        admin_up(port) && gauge(port, "tally_partitions_assigned") >= f64::from(PARTITIONS)
    });
    tally
}

fn events(from: usize, to: usize) -> Vec<String> {
    let pad = "x".repeat(VALUE_BYTES);
    (from..to)
        .map(|n| format!(r#"{{"id":"bl-{n:06}","pad":"{pad}"}}"#))
        .collect()
}

#[test]
fn sink_down_backlog_stays_within_the_fetch_budget_then_is_delivered_once() {
    assert!(
        (RECORDS * VALUE_BYTES) as u64 > 4 * BUDGET_MB * MIB,
        "the backlog must dwarf the budget, or the test proves nothing"
    );
    let topic = unique_topic("backlog");
    create_topic(&topic, PARTITIONS);
    let receiver = HttpReceiver::start();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = config(dir.path(), &topic, &receiver.url(), port);

    // Idle footprint: a run with every partition's worker, fetcher and
    // connection and the sink's connections, a few records delivered,
    // nothing waiting. The bound is that plus what the budget allows.
    let warmup = 4 * PARTITIONS as usize;
    produce_jsonl(&topic, &events(0, warmup), Some("/id"));
    let mut tally = spawn(dir.path(), &cfg, port);
    wait_for("the warm-up delivered", TIMEOUT, || {
        receiver.accepted() >= warmup
    });
    let idle_kib = status_kib(tally.pid().expect("pid"), "VmHWM:");
    stop_cleanly(&mut tally);

    // The sink goes down, the backlog arrives, tally starts over it.
    receiver.status_for(503, Duration::from_secs(3600));
    let total = warmup + RECORDS;
    let produced = produce_jsonl(&topic, &events(warmup, total), Some("/id"));
    assert_eq!(produced["count"], RECORDS as u64, "{produced}");
    let mut tally = spawn(dir.path(), &cfg, port);
    let pid = tally.pid().expect("pid");
    // The backlog meets the budget: fetchers wait for bytes while the sink
    // is retried.
    let budget = (BUDGET_MB * MIB) as f64;
    wait_for("the fetch budget to fill", TIMEOUT, || {
        assert!(tally.is_running(), "tally exited:\n{}", tally.stderr());
        let text = scrape(port);
        metric(&text, "tally_fetch_budget_waits_total", &[]).unwrap_or(0.0) > 0.0
            && metric(&text, "tally_fetch_budget_used_bytes", &[]).unwrap_or(0.0) >= budget * 0.75
    });
    assert_eq!(
        gauge(port, "tally_fetch_budget_bytes"),
        budget,
        "exported limit"
    );
    // Several retry rounds of every partition while the budget stays full.
    let seen = receiver.requests();
    wait_for("the sink to be retried", TIMEOUT, || {
        receiver.requests() >= seen + 4 * PARTITIONS as usize
    });
    let peak_kib = status_kib(pid, "VmHWM:");
    let used = gauge(port, "tally_fetch_budget_used_bytes");
    // The budget holds the fetched bytes and their record structs; the
    // workers' decoded chunks and the sink's request bodies reference those
    // bytes (no copy of the values), so another budget's worth covers the
    // per-record bookkeeping, requests in flight and allocator slack.
    let bound_kib = idle_kib + 2 * BUDGET_MB * 1024;
    eprintln!(
        "idle {idle_kib} KiB, peak {peak_kib} KiB during the outage (bound {bound_kib} KiB, \
         budget used {used} bytes); backlog {} KiB",
        RECORDS * VALUE_BYTES / 1024
    );
    assert!(
        peak_kib <= bound_kib,
        "peak RSS {peak_kib} KiB over the bound {bound_kib} KiB \
         (idle {idle_kib} KiB + 2 × {BUDGET_MB} MiB budget)"
    );

    // The sink is back: everything goes through, each record once.
    receiver.status_for(503, Duration::ZERO);
    wait_for("every record accepted", TIMEOUT, || {
        assert!(tally.is_running(), "tally exited:\n{}", tally.stderr());
        receiver.accepted() >= total
    });
    stop_cleanly(&mut tally);
    let accepted = receiver.accepted_by_key();
    let twice: Vec<_> = accepted.iter().filter(|(_, v)| v.len() > 1).collect();
    assert!(
        twice.is_empty(),
        "accepted more than once: {:?}",
        twice.first()
    );
    let keys: BTreeSet<_> = accepted.keys().cloned().collect();
    assert_eq!(keys.len(), total, "distinct records accepted");
    assert_fully_committed(dir.path(), &cfg);
}
