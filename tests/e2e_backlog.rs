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

/// Restoring many partitions at once takes from the same budget: a deleted
/// store is rebuilt from a changelog many times the budget, 32 partitions
/// restoring together. Memory first, with `store.retention` so short that
/// every changelog record is read, decoded and found expired (nothing is
/// written, so the store's own growth does not blur the figure): peak RSS
/// within idle + 2 × budget. Then a real restore: every ID is back (count,
/// and duplicates produced afterwards are not delivered).
#[test]
fn restoring_many_partitions_stays_within_the_fetch_budget() {
    const RESTORE_PARTITIONS: u32 = 32;
    const IDS: usize = 60_000;
    /// Random hex (incompressible for the changelog's lz4): the restored
    /// keys are what the restore holds in memory.
    const KEY_CHARS: usize = 600;
    assert!(
        (IDS * KEY_CHARS) as u64 > 4 * BUDGET_MB * MIB,
        "the changelog must dwarf the budget, or the test proves nothing"
    );
    let topic = unique_topic("restore-src");
    let changelog = unique_topic("restore-log");
    create_topic(&topic, RESTORE_PARTITIONS);
    create_topic(&changelog, RESTORE_PARTITIONS);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let out = dir.path().join("delivered.jsonl");
    let cfg = write_file_sink_config(
        dir.path(),
        &[&topic],
        "json",
        &format!("dedupe = \"/id\"\nchangelog_topic = {changelog:?}\n"),
        &format!(
            "\n[pipeline]\nfetch_memory_mb = {BUDGET_MB}\n\n[admin]\nlisten = \"127.0.0.1:{port}\"\n"
        ),
    );
    let text = std::fs::read_to_string(&cfg).expect("config");
    let expiring = dir.path().join("expiring.toml");
    std::fs::write(
        &expiring,
        text.replacen("[store]\n", "[store]\nretention = \"1s\"\n", 1),
    )
    .expect("config");
    let mut rng = fastrand::Rng::with_seed(7);
    let mut key = |n: usize| -> String {
        let mut k = format!("rs-{n:06}-");
        while k.len() < KEY_CHARS {
            k.push_str(&format!("{:016x}", rng.u64(..)));
        }
        k.truncate(KEY_CHARS);
        k
    };
    let lines: Vec<String> = (0..IDS)
        .map(|n| format!(r#"{{"id":"{}"}}"#, key(n)))
        .collect();
    let run = |config: &Path| {
        TallyProcess::spawn_in(
            dir.path(),
            &["run", "--config", config.to_str().unwrap()],
            &[],
        )
    };
    let wait_lines = |tally: &mut TallyProcess, n: usize| {
        wait_for("delivered", TIMEOUT, || {
            assert!(tally.is_running(), "tally exited:\n{}", tally.stderr());
            count_lines(&out) >= n
        });
    };
    let delete_store =
        || std::fs::remove_dir_all(dir.path().join("state")).expect("delete the store");

    // Idle footprint: every partition restoring an empty changelog and
    // fetching, a few records delivered.
    let warmup = 2 * RESTORE_PARTITIONS as usize;
    produce_jsonl(&topic, &lines[..warmup], Some("/id"));
    let mut tally = run(&cfg);
    wait_lines(&mut tally, warmup);
    let idle_kib = status_kib(tally.pid().expect("pid"), "VmHWM:");
    // Then the rest, through the changelog.
    let produced = produce_jsonl(&topic, &lines[warmup..], Some("/id"));
    assert_eq!(produced["count"], (IDS - warmup) as u64, "{produced}");
    wait_lines(&mut tally, IDS);
    let delivering_kib = status_kib(tally.pid().expect("pid"), "VmHWM:");
    stop_cleanly(&mut tally);
    // Not a race to wait out: the next run must find every stored ID older
    // than its `retention = "1s"`, so time itself has to pass.
    std::thread::sleep(Duration::from_millis(1500));

    // Memory: the whole changelog read by 32 partitions at once, all expired.
    delete_store();
    let mut tally = run(&expiring);
    let pid = tally.pid().expect("pid");
    let started = std::time::Instant::now();
    wait_for("every partition restored", TIMEOUT, || {
        assert!(tally.is_running(), "tally exited:\n{}", tally.stderr());
        restores_done(&tally.stderr()) == RESTORE_PARTITIONS as usize
    });
    let read_s = started.elapsed().as_secs_f64();
    let peak_kib = status_kib(pid, "VmHWM:");
    let waits = gauge(port, "tally_fetch_budget_waits_total");
    let log = stop_cleanly(&mut tally);
    let expired: u64 = log
        .lines()
        .filter(|l| l.contains("restored tracking IDs from the changelog"))
        .map(|l| field(l, "expired_ids"))
        .sum();
    assert_eq!(expired, IDS as u64, "every ID read and found expired");
    let bound_kib = idle_kib + 2 * BUDGET_MB * 1024;
    eprintln!(
        "changelog of {IDS} IDs ({} KiB of keys) read by {RESTORE_PARTITIONS} partitions at once: \
         {read_s:.1} s; idle {idle_kib} KiB, peak {peak_kib} KiB (bound {bound_kib} KiB, budget waits {waits})",
        IDS * KEY_CHARS / 1024,
    );
    assert!(
        peak_kib <= bound_kib,
        "peak RSS {peak_kib} KiB while restoring, over the bound {bound_kib} KiB \
         (idle {idle_kib} KiB + 2 × {BUDGET_MB} MiB budget)"
    );

    // A real restore: every ID is back. Its peak RSS is printed, not
    // bounded: beside the delivering run's peak it was measured at -2 to
    // +12 MB on this code and +8.8 MB on the code before the restore took
    // from the budget (BENCHMARKS "Changelog restore within the fetch
    // budget"), so that comparison neither separates the two nor holds
    // steady on a loaded box. The memory claim is the all-expired read above.
    delete_store();
    let mut tally = run(&cfg);
    let pid = tally.pid().expect("pid");
    wait_for("every ID restored", TIMEOUT, || {
        assert!(tally.is_running(), "tally exited:\n{}", tally.stderr());
        restores_done(&tally.stderr()) == RESTORE_PARTITIONS as usize
    });
    assert_eq!(
        metric(&scrape(port), "tally_changelog_restored_ids_total", &[]),
        Some(IDS as f64)
    );
    let restore_kib = status_kib(pid, "VmHWM:");
    eprintln!(
        "restore of {IDS} IDs: peak {restore_kib} KiB; delivering them peaked at {delivering_kib} KiB"
    );
    // Old IDs again, then new ones: only the new arrive.
    produce_jsonl(&topic, &lines[..500], Some("/id"));
    let fresh: Vec<String> = (0..RESTORE_PARTITIONS as usize)
        .map(|n| format!(r#"{{"id":"fresh-{n}"}}"#))
        .collect();
    produce_jsonl(&topic, &fresh, Some("/id"));
    wait_lines(&mut tally, IDS + fresh.len());
    // The fresh IDs may land in other partitions than the old ones: wait
    // until every partition has resolved what was produced, so a wrongly
    // delivered old ID would be in the sink before the stop.
    wait_for("every partition resolved to its end", TIMEOUT, || {
        metric(&scrape(port), "tally_partition_lag", &[]) == Some(0.0)
    });
    stop_cleanly(&mut tally);
    let keys: Vec<String> = read_jsonl(&out)
        .iter()
        .filter_map(|l| l["dedupe_key"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        keys.len(),
        IDS + fresh.len(),
        "a restored ID was delivered again"
    );
    let distinct: BTreeSet<&String> = keys.iter().collect();
    assert_eq!(distinct.len(), keys.len());
    let count = TallyProcess::run(
        dir.path(),
        &["ids", "count", "--config", cfg.to_str().unwrap(), "--json"],
        &[],
        Duration::from_secs(60),
    );
    assert!(count.status.success(), "{}", count.stderr);
    assert_eq!(
        count.json()[0]["ids"],
        (IDS + fresh.len()) as u64,
        "{}",
        count.stdout
    );
    assert_fully_committed(dir.path(), &cfg);
}

/// Partitions whose restore finished, by their log line.
fn restores_done(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("restored tracking IDs from the changelog"))
        .count()
}

/// A numeric `name=` field of a (plain) log line; 0 when absent.
fn field(line: &str, name: &str) -> u64 {
    let pat = format!(" {name}=");
    line.find(&pat)
        .map(|at| {
            line[at + pat.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .and_then(|d| d.parse().ok())
        .unwrap_or(0)
}
