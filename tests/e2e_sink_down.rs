//! End to end: a sink endpoint with nothing listening (connection refused)
//! while 8 partitions have records waiting. tally must cost next to no CPU
//! (one probe record per partition per backoff, not a request per record),
//! say once that the sink is down (log and `tally_sink_up`), and deliver
//! every record exactly once soon after the endpoint comes back.
//! Needs scripts/test.sh (broker + Python tools).

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::admin_http::{free_port, metric, scrape};
use support::http_receiver::HttpReceiver;
use support::killbill_double::{KillbillDouble, sink_toml};
use support::logs::{plain_log, tail};
use support::*;

const PARTITIONS: u32 = 8;
/// CPU the process may use in the measured window with the sink down. The
/// fixed code needs a few hundredths of a second; before, a chunk of
/// thousands of refused connects per partition per retry cost seconds.
const WINDOW: Duration = Duration::from_secs(10);
const MAX_CPU_SECONDS: f64 = 1.5;
const RETRY_MAX: &str = "2s";

fn config(dir: &Path, topic: &str, format: &str, dedupe: &str, sink: &str, admin: u16) -> String {
    format!(
        "[kafka]\nbrokers = [{:?}]\n[store]\npath = {:?}\n[assignment]\nmode = \"static\"\nmember = 0\nmembers = 1\n\
         \n[pipeline]\nretry_max = {RETRY_MAX:?}\n\
         \n[admin]\nlisten = \"127.0.0.1:{admin}\"\n\
         \n[[routes]]\nname = \"down\"\ntopics = [{topic:?}]\nformat = {format:?}\n{dedupe}sink = {sink:?}\nstart = \"earliest\"\n\n",
        broker(),
        dir.join("state").display().to_string(),
    )
}

/// User + system CPU seconds of a process (USER_HZ is 100 on Linux).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    ticks as f64 / 100.0
}

fn sink_metric(port: u16, name: &str, sink: &str) -> Option<f64> {
    metric(&scrape(port), name, &[&format!("sink=\"{sink}\"")])
}

/// Waits until the sink is reported down with every partition's records
/// waiting, then checks the process's CPU over `WINDOW` and that the sink
/// is reported down.
fn cpu_while_down(tally: &mut TallyProcess, admin: u16, sink: &str, produced: usize) {
    wait_for("failed attempts", Duration::from_secs(60), || {
        assert!(tally.is_running(), "{}", tail(&tally.stderr()));
        support::admin_http::admin_up(admin)
            && metric(&scrape(admin), "tally_sink_retries_total", &[]).unwrap_or(0.0) > 0.0
    });
    wait_for(
        "every record fetched and waiting",
        Duration::from_secs(60),
        || {
            let text = scrape(admin);
            metric(&text, "tally_partition_lag", &[]).unwrap_or(0.0) >= produced as f64
                && metric(&text, "tally_partitions_assigned", &[]) == Some(PARTITIONS as f64)
        },
    );
    let pid = tally.pid().expect("tally pid");
    let before = cpu_seconds(pid);
    let started = Instant::now();
    std::thread::sleep(WINDOW);
    let used = cpu_seconds(pid) - before;
    eprintln!(
        "{sink} sink down: {used:.2} CPU s over {:.1} s, load {}",
        started.elapsed().as_secs_f64(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    assert!(tally.is_running(), "{}", tail(&tally.stderr()));
    assert!(
        used < MAX_CPU_SECONDS,
        "{used:.2} CPU s with the {sink} sink down"
    );
    assert_eq!(sink_metric(admin, "tally_sink_up", sink), Some(0.0));
}

/// One WARN for the outage, one INFO for the recovery, no per-attempt WARNs.
fn assert_logged_once(log: &str, sink: &str) {
    let log = plain_log(log);
    let down: Vec<&str> = log.lines().filter(|l| l.contains("sink down:")).collect();
    assert_eq!(down.len(), 1, "sink down lines:\n{}", down.join("\n"));
    assert!(
        down[0].contains("WARN") && down[0].contains(&format!("sink=\"{sink}\"")),
        "{}",
        down[0]
    );
    assert!(down[0].contains("class=\"transient\""), "{}", down[0]);
    let up = log
        .lines()
        .filter(|l| l.contains("sink answers again"))
        .count();
    assert_eq!(up, 1, "{}", tail(&log));
    let per_attempt = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("delivery failed"))
        .count();
    assert_eq!(
        per_attempt,
        0,
        "per-attempt warnings while down:\n{}",
        tail(&log)
    );
}

fn spawn(dir: &Path, config: &Path, envs: &[(String, String)]) -> TallyProcess {
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    TallyProcess::spawn_in(dir, &["run", "--config", config.to_str().unwrap()], &envs)
}

fn write(dir: &Path, text: String) -> PathBuf {
    let path = dir.join("tally.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

#[test]
fn killbill_down_costs_no_cpu_and_every_record_lands_once_when_it_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("kb-down");
    create_topic(&topic, PARTITIONS);
    // Many subscriptions, as a billing pipeline has: most records need
    // their own lookup, so a retried chunk is thousands of requests.
    let (status, stdout, stderr) = run_kafka_tool_raw(
        &[
            "gen-usage",
            "--count",
            "12000",
            "--dup-ratio",
            "0.05",
            "--tenants",
            "2",
        ]
        .into_iter()
        .chain(["--subscriptions", "2000", "--seed", "91"])
        .collect::<Vec<_>>(),
        None,
        TOOL_TIMEOUT,
    );
    assert!(status.success(), "gen-usage: {stderr}");
    let lines: Vec<String> = stdout.lines().map(str::to_owned).collect();
    let tenants = [
        "0d96d663-00c1-4ff7-8324-d97cc551d6b3",
        "6f1e0a52-9b7d-4c1e-a3f5-2d8b7c9e4f10",
    ];
    let double = KillbillDouble::with_tenants(&tenants);
    let mut distinct = BTreeSet::new();
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line).expect("event");
        let (t, s, id) = (
            &v["tenantId"],
            &v["subscriptionExternalKey"],
            &v["trackingId"],
        );
        let (t, s, id) = (
            t.as_str().unwrap(),
            s.as_str().unwrap(),
            id.as_str().unwrap(),
        );
        distinct.insert(format!("{t}/{s}/{id}"));
        double.add_subscription(t, s);
    }
    // Nothing listens on its port until the restart below.
    double.stop();
    produce_jsonl(&topic, &lines, Some("/trackingId"));

    let admin = free_port();
    let (kb, envs) = sink_toml(&double, dir.path(), &tenants, "");
    let cfg = write(
        dir.path(),
        config(dir.path(), &topic, "killbill-usage", "", "killbill", admin) + &kb,
    );
    let mut tally = spawn(dir.path(), &cfg, &envs);
    cpu_while_down(&mut tally, admin, "killbill", lines.len());
    assert_eq!(double.requests(), 0);

    double.restart();
    let back = Instant::now();
    let _ = wait_until(Duration::from_secs(30), || double.accepted() > 0);
    let first = back.elapsed();
    wait_kill_bill_accepted(
        &double,
        &mut tally,
        distinct.len(),
        Duration::from_secs(120),
    );
    assert_eq!(sink_metric(admin, "tally_sink_up", "killbill"), Some(1.0));
    assert_eq!(
        sink_metric(admin, "tally_sink_outages_total", "killbill"),
        Some(1.0)
    );
    let log = stop_cleanly(&mut tally);
    // Recovery within the backoff cap (2 s), with room for a loaded machine.
    assert!(
        first < Duration::from_secs(10),
        "first record {first:?} after Kill Bill returned"
    );
    assert_logged_once(&log, "killbill");
    let held = double.records();
    let keys: BTreeSet<String> = held.keys().cloned().collect();
    assert_eq!(keys, distinct.iter().cloned().collect::<BTreeSet<_>>());
    for (key, rec) in &held {
        assert_eq!(rec.count, 1, "{key} accepted {} times", rec.count);
    }
    assert_fully_committed(dir.path(), &cfg);
}

#[test]
fn http_endpoint_down_costs_no_cpu_and_every_record_lands_once_when_it_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("http-down");
    create_topic(&topic, PARTITIONS);
    let count = 12_000;
    let lines: Vec<String> = (0..count)
        .map(|i| format!(r#"{{"id":"ev-{i}","amount":{i}}}"#))
        .collect();
    produce_jsonl(&topic, &lines, Some("/id"));

    // Nothing listens there until the receiver starts below.
    let port = free_port();
    let admin = free_port();
    let text = config(
        dir.path(),
        &topic,
        "json",
        "dedupe = \"/id\"\n",
        "http",
        admin,
    ) + &format!("[sinks.http]\nurl = \"http://127.0.0.1:{port}/in\"\n");
    let cfg = write(dir.path(), text);
    let mut tally = spawn(dir.path(), &cfg, &[]);
    cpu_while_down(&mut tally, admin, "http", count);

    let receiver = HttpReceiver::start_on(port);
    let back = Instant::now();
    let _ = wait_until(Duration::from_secs(30), || receiver.accepted() > 0);
    let first = back.elapsed();
    let all = wait_until(Duration::from_secs(120), || receiver.accepted() >= count);
    assert!(
        all,
        "{} of {count} accepted\n{}",
        receiver.accepted(),
        tail(&tally.stderr())
    );
    assert_eq!(sink_metric(admin, "tally_sink_up", "http"), Some(1.0));
    assert_eq!(
        sink_metric(admin, "tally_sink_outages_total", "http"),
        Some(1.0)
    );
    let log = stop_cleanly(&mut tally);
    assert!(
        first < Duration::from_secs(10),
        "first record {first:?} after the endpoint returned"
    );
    assert_logged_once(&log, "http");
    let by_key = receiver.accepted_by_key();
    assert_eq!(by_key.len(), count);
    for i in 0..count {
        let n = by_key.get(&format!("ev-{i}")).map_or(0, Vec::len);
        assert_eq!(n, 1, "ev-{i} accepted {n} times");
    }
    assert_fully_committed(dir.path(), &cfg);
}
