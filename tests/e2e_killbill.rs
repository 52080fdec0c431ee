//! End to end: the real `tally` binary delivering Kill Bill usage events from
//! the test broker to the in-process Kill Bill double — happy path, rejects,
//! outage, 401 window, transient faults and repeated SIGKILLs.
//! Needs scripts/test.sh (broker + Python tools).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::value::RawValue;
use support::killbill_double::{KillbillDouble, sink_toml};
use support::logs::{plain_log, summary_field, tail};
use support::*;

const T0: &str = "0d96d663-00c1-4ff7-8324-d97cc551d6b3";
const T1: &str = "6f1e0a52-9b7d-4c1e-a3f5-2d8b7c9e4f10";
/// Third sample tenant: in the events, never in tally's config.
const T2: &str = "a3c5e7f9-1b2d-4e6f-8a0c-3e5f7a9b1c2d";
const EXIT_TIMEOUT: Duration = Duration::from_secs(45);

/// One generated event as the double should end up holding it.
#[derive(Debug, Clone)]
struct Expected {
    key: String,
    tenant: String,
    sub: String,
    /// (unitType, [(recordDate as Kill Bill gets it, amount text)])
    units: Vec<(String, Vec<(String, String)>)>,
}

#[derive(Deserialize)]
struct EvIn<'a> {
    #[serde(rename = "tenantId")]
    tenant: String,
    #[serde(rename = "subscriptionExternalKey")]
    sub: String,
    #[serde(rename = "trackingId")]
    tracking: String,
    #[serde(rename = "unitUsageRecords", borrow)]
    units: Vec<UnitIn<'a>>,
}
#[derive(Deserialize)]
struct UnitIn<'a> {
    #[serde(rename = "unitType")]
    unit_type: String,
    #[serde(rename = "usageRecords", borrow)]
    records: Vec<RecIn<'a>>,
}
#[derive(Deserialize)]
struct RecIn<'a> {
    #[serde(rename = "recordDate")]
    date: serde_json::Value,
    #[serde(borrow)]
    amount: &'a RawValue,
}

fn expected(line: &str) -> Expected {
    let e: EvIn<'_> = serde_json::from_str(line).expect("generated event");
    let units = e
        .units
        .iter()
        .map(|u| {
            let recs = u
                .records
                .iter()
                .map(|r| {
                    let d = tally::format::parse_record_date(&r.date).expect("record date");
                    (
                        d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                        r.amount.get().trim_matches('"').to_string(),
                    )
                })
                .collect();
            (u.unit_type.clone(), recs)
        })
        .collect();
    Expected {
        key: format!("{}/{}/{}", e.tenant, e.sub, e.tracking),
        tenant: e.tenant,
        sub: e.sub,
        units,
    }
}

struct RouteSpec<'a> {
    name: &'a str,
    topics: Vec<&'a str>,
    sink: &'a str,
}

/// Writes `dir/tally.toml` for these routes; returns its path and the env
/// tally needs for the Kill Bill secrets.
fn write_config(
    dir: &Path,
    double: &KillbillDouble,
    tenants: &[&str],
    routes: &[RouteSpec<'_>],
    sink_extra: &str,
    extra: &str,
) -> (PathBuf, Vec<(String, String)>) {
    let mut text = format!(
        "[kafka]\nbrokers = [{:?}]\n[store]\npath = {:?}\n[assignment]\nmode = \"static\"\nmember = 0\nmembers = 1\n",
        broker(),
        dir.join("state").display().to_string()
    );
    for r in routes {
        let topics: Vec<String> = r.topics.iter().map(|t| format!("{t:?}")).collect();
        text.push_str(&format!(
            "\n[[routes]]\nname = {:?}\ntopics = [{}]\nformat = \"killbill-usage\"\nsink = {:?}\nstart = \"earliest\"\n",
            r.name,
            topics.join(", "),
            r.sink
        ));
    }
    if routes.iter().any(|r| r.sink == "file") {
        text.push_str(&format!(
            "\n[sinks.file]\npath = {:?}\n",
            dir.join("delivered.jsonl").display().to_string()
        ));
    }
    let (kb, envs) = sink_toml(double, dir, tenants, sink_extra);
    text.push('\n');
    text.push_str(&kb);
    text.push_str(extra);
    let path = dir.join("tally.toml");
    std::fs::write(&path, text).expect("write config");
    (path, envs)
}

fn spawn(dir: &Path, config: &Path, envs: &[(String, String)]) -> TallyProcess {
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    TallyProcess::spawn_in(dir, &["run", "--config", config.to_str().unwrap()], &envs)
}

/// Registers every (tenant, subscription) of `events` for the mapped tenants,
/// except the external keys in `unknown`.
fn register(double: &KillbillDouble, events: &[Expected], tenants: &[&str], unknown: &[&str]) {
    let pairs: BTreeSet<(&str, &str)> = events
        .iter()
        .filter(|e| tenants.contains(&e.tenant.as_str()) && !unknown.contains(&e.sub.as_str()))
        .map(|e| (e.tenant.as_str(), e.sub.as_str()))
        .collect();
    for (t, s) in pairs {
        double.add_subscription(t, s);
    }
}

/// Every expected record is in the double exactly once, with the exact
/// amounts and dates; nothing else is.
fn assert_exactly(double: &KillbillDouble, want: &[Expected]) {
    let held = double.records();
    let want: BTreeMap<&str, &Expected> = want.iter().map(|e| (e.key.as_str(), e)).collect();
    let missing: Vec<&&str> = want.keys().filter(|k| !held.contains_key(**k)).collect();
    assert!(
        missing.is_empty(),
        "{} records missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let extra: Vec<&String> = held
        .keys()
        .filter(|k| !want.contains_key(k.as_str()))
        .collect();
    assert!(extra.is_empty(), "unexpected records: {extra:?}");
    for (key, rec) in &held {
        assert_eq!(rec.count, 1, "{key} accepted {} times", rec.count);
        assert_eq!(rec.units, want[key.as_str()].units, "{key}");
    }
}

#[test]
fn delivers_tenants_and_subscriptions_and_dead_letters_rejects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b, c) = (
        unique_topic("kb-a"),
        unique_topic("kb-b"),
        unique_topic("kb-file"),
    );
    create_topic(&a, 3);
    create_topic(&b, 2);
    create_topic(&c, 1);
    // Topic a: three tenants (the third is not mapped), 10% duplicates.
    let lines_a = gen_usage(600, 0.1, 3, 11);
    let lines_b = gen_usage(200, 0.0, 2, 12);
    let lines_c = gen_usage(30, 0.0, 1, 13);
    let ev_a: Vec<Expected> = lines_a.iter().map(|l| expected(l)).collect();
    let ev_b: Vec<Expected> = lines_b.iter().map(|l| expected(l)).collect();
    let mapped = [T0, T1];
    let unknown_sub = ev_a
        .iter()
        .find(|e| e.tenant == T1)
        .map(|e| e.sub.clone())
        .expect("an event of tenant 1");

    let double = KillbillDouble::with_tenants(&mapped);
    register(&double, &ev_a, &mapped, &[unknown_sub.as_str()]);
    register(&double, &ev_b, &mapped, &[unknown_sub.as_str()]);
    let deliverable: Vec<Expected> = ev_a
        .iter()
        .chain(&ev_b)
        .filter(|e| e.tenant != T2 && e.sub != unknown_sub)
        .cloned()
        .collect();
    let distinct: BTreeSet<&str> = deliverable.iter().map(|e| e.key.as_str()).collect();
    let rejected_lines = ev_a
        .iter()
        .chain(&ev_b)
        .filter(|e| e.tenant == T2 || e.sub == unknown_sub)
        .count();
    let unknown_lines = ev_a
        .iter()
        .chain(&ev_b)
        .filter(|e| e.sub == unknown_sub)
        .count() as u64;
    assert!(rejected_lines > 0 && unknown_lines > 0);

    produce_jsonl(&a, &lines_a, Some("/trackingId"));
    produce_jsonl(&b, &lines_b, Some("/trackingId"));
    produce_jsonl(&c, &lines_c, Some("/trackingId"));
    let routes = [
        RouteSpec {
            name: "usage",
            topics: vec![&a],
            sink: "killbill",
        },
        RouteSpec {
            name: "usage-b",
            topics: vec![&b],
            sink: "killbill",
        },
        RouteSpec {
            name: "archive",
            topics: vec![&c],
            sink: "file",
        },
    ];
    let (config, envs) = write_config(
        dir.path(),
        &double,
        &[T0, T1],
        &routes,
        "reason = \"e2e\"\n",
        "",
    );

    let mut tally = spawn(dir.path(), &config, &envs);
    wait_kill_bill_accepted(&double, &mut tally, distinct.len(), Duration::from_secs(60));
    wait_for("file route", Duration::from_secs(30), || {
        count_lines(dir.path().join("delivered.jsonl")) >= lines_c.len()
    });
    std::thread::sleep(Duration::from_millis(500));
    let stderr = stop_cleanly(&mut tally);

    assert_exactly(&double, &deliverable);
    // Rejects are dead-lettered once each, not retried forever, and do not
    // block their partitions (everything committed to the end).
    assert_eq!(
        summary_field(&stderr, "dead_lettered"),
        rejected_lines as u64,
        "{}",
        tail(&stderr)
    );
    let statuses = double.statuses();
    let not_found = statuses.get(&404).copied().unwrap_or(0);
    assert!(
        (1..=unknown_lines).contains(&not_found),
        "404s: {not_found}, unknown-subscription lines: {unknown_lines}; {statuses:?}"
    );
    assert!(stderr.contains("has no credentials"), "{}", tail(&stderr));
    assert_fully_committed(dir.path(), &config);
    eprintln!(
        "happy path: delivered={} rejected_lines={} statuses={statuses:?}",
        distinct.len(),
        rejected_lines
    );

    // A second run sends nothing new.
    let before = double.requests();
    let mut again = spawn(dir.path(), &config, &envs);
    std::thread::sleep(Duration::from_secs(2));
    stop_cleanly(&mut again);
    assert_eq!(
        double.requests(),
        before,
        "restart re-sent committed records"
    );
}

#[test]
fn outage_while_events_keep_arriving_loses_and_skips_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("kb-outage");
    create_topic(&topic, 4);
    let lines = gen_usage(2000, 0.1, 2, 21);
    let events: Vec<Expected> = lines.iter().map(|l| expected(l)).collect();
    let double = KillbillDouble::with_tenants(&[T0, T1]);
    register(&double, &events, &[T0, T1], &[]);
    let distinct: BTreeSet<&str> = events.iter().map(|e| e.key.as_str()).collect();
    double.set_latency(Duration::from_millis(2));

    let (config, envs) = write_config(
        dir.path(),
        &double,
        &[T0, T1],
        &[RouteSpec {
            name: "usage",
            topics: vec![&topic],
            sink: "killbill",
        }],
        "connect_timeout = \"1s\"\nrequest_timeout = \"2s\"\n",
        "\n[pipeline]\nmax_batch_records = 100\nretry_initial = \"50ms\"\nretry_max = \"500ms\"\n",
    );
    let (first, second) = lines.split_at(1000);
    produce_jsonl(&topic, first, Some("/trackingId"));
    let mut tally = spawn(dir.path(), &config, &envs);
    wait_kill_bill_accepted(&double, &mut tally, 200, Duration::from_secs(60));

    double.stop();
    let at_stop = double.accepted();
    // Events keep arriving while Kill Bill is down.
    produce_jsonl(&topic, second, Some("/trackingId"));
    std::thread::sleep(Duration::from_secs(3));
    assert!(tally.is_running(), "{}", tail(&tally.stderr()));
    assert_eq!(double.accepted(), at_stop, "accepted while down?");

    double.restart();
    wait_kill_bill_accepted(&double, &mut tally, distinct.len(), Duration::from_secs(90));
    std::thread::sleep(Duration::from_millis(500));
    let stderr = stop_cleanly(&mut tally);
    assert!(stderr.contains("class=\"transient\"") || stderr.contains("class=transient"));
    assert_eq!(
        summary_field(&stderr, "dead_lettered"),
        0,
        "{}",
        tail(&stderr)
    );
    assert_exactly(&double, &events);
    assert_fully_committed(dir.path(), &config);
    eprintln!(
        "outage: distinct={} accepted_before_outage={at_stop} duplicate_posts={} statuses={:?}",
        distinct.len(),
        double.duplicate_posts(),
        double.statuses()
    );
}

#[test]
fn unauthorized_window_halts_without_dropping_anything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("kb-401");
    create_topic(&topic, 2);
    let lines = gen_usage(800, 0.05, 2, 31);
    let events: Vec<Expected> = lines.iter().map(|l| expected(l)).collect();
    let double = KillbillDouble::with_tenants(&[T0, T1]);
    register(&double, &events, &[T0, T1], &[]);
    let distinct: BTreeSet<&str> = events.iter().map(|e| e.key.as_str()).collect();

    let (config, envs) = write_config(
        dir.path(),
        &double,
        &[T0, T1],
        &[RouteSpec {
            name: "usage",
            topics: vec![&topic],
            sink: "killbill",
        }],
        "",
        "\n[pipeline]\nmax_batch_records = 50\nretry_initial = \"50ms\"\nretry_max = \"500ms\"\n",
    );
    let (first, second) = lines.split_at(300);
    produce_jsonl(&topic, first, Some("/trackingId"));
    let mut tally = spawn(dir.path(), &config, &envs);
    wait_kill_bill_accepted(&double, &mut tally, 100, Duration::from_secs(60));

    // The window stays open until tally has been refused several times, so
    // a slow machine (producing, retrying) cannot outlast it.
    double.unauthorized_for(Duration::from_secs(600));
    let at_start = double.accepted();
    produce_jsonl(&topic, second, Some("/trackingId"));
    let refused = |d: &KillbillDouble| d.statuses().get(&401).copied().unwrap_or(0);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while refused(&double) < 5 {
        assert!(tally.is_running(), "tally exited during the 401 window");
        assert!(
            std::time::Instant::now() < deadline,
            "tally was never refused with 401"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Nothing gets in, nothing is dead-lettered or skipped: tally waits. (A
    // few requests already in flight when the window opened may land.)
    assert!(
        double.accepted() - at_start < 60,
        "accepted during the 401 window"
    );
    assert!(tally.is_running());
    double.unauthorized_for(Duration::ZERO);

    wait_kill_bill_accepted(&double, &mut tally, distinct.len(), Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(500));
    let stderr = stop_cleanly(&mut tally);
    assert!(
        stderr.contains("class=\"halt\"") || stderr.contains("class=halt"),
        "{}",
        tail(&stderr)
    );
    assert_eq!(
        summary_field(&stderr, "dead_lettered"),
        0,
        "{}",
        tail(&stderr)
    );
    assert_exactly(&double, &events);
    assert_fully_committed(dir.path(), &config);
    eprintln!(
        "401 window: distinct={} statuses={:?}",
        distinct.len(),
        double.statuses()
    );
}

#[test]
fn server_errors_and_hung_requests_are_retried() {
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("kb-5xx");
    create_topic(&topic, 2);
    let lines = gen_usage(400, 0.0, 2, 41);
    let events: Vec<Expected> = lines.iter().map(|l| expected(l)).collect();
    let double = KillbillDouble::with_tenants(&[T0, T1]);
    register(&double, &events, &[T0, T1], &[]);
    double.fail_next(40);
    double.hang_next(4, Duration::from_secs(30));
    produce_jsonl(&topic, &lines, Some("/trackingId"));

    let (config, envs) = write_config(
        dir.path(),
        &double,
        &[T0, T1],
        &[RouteSpec {
            name: "usage",
            topics: vec![&topic],
            sink: "killbill",
        }],
        "request_timeout = \"500ms\"\n",
        "\n[pipeline]\nretry_initial = \"50ms\"\nretry_max = \"500ms\"\n",
    );
    let t0 = Instant::now();
    let mut tally = spawn(dir.path(), &config, &envs);
    wait_kill_bill_accepted(&double, &mut tally, events.len(), Duration::from_secs(60));
    let elapsed = t0.elapsed();
    let stderr = stop_cleanly(&mut tally);
    // Hung requests were cut by the 500 ms request timeout and retried, not waited out.
    assert!(elapsed < Duration::from_secs(20), "took {elapsed:?}");
    assert!(
        stderr.contains("HTTP 503") || stderr.contains("request timeout"),
        "{}",
        tail(&stderr)
    );
    let statuses = double.statuses();
    assert!(
        statuses.get(&503).copied().unwrap_or(0) >= 30,
        "{statuses:?}"
    );
    assert_eq!(summary_field(&stderr, "dead_lettered"), 0);
    assert_exactly(&double, &events);
    eprintln!(
        "5xx/timeouts: {} records in {:?}, statuses {:?}",
        events.len(),
        t0.elapsed(),
        double.statuses()
    );
}

#[test]
fn sigkill_while_delivering_keeps_every_record_exactly_once() {
    const EVENTS: usize = 20_000;
    const KILLS: usize = 6;
    const PARTITIONS: u32 = 4;
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("kb-crash");
    create_topic(&topic, PARTITIONS);
    let lines = gen_usage(EVENTS, 0.12, 2, 51);
    let events: Vec<Expected> = lines.iter().map(|l| expected(l)).collect();
    let distinct: BTreeSet<&str> = events.iter().map(|e| e.key.as_str()).collect();
    let duplicate_events = lines.len() - distinct.len();
    assert!(
        duplicate_events * 10 >= lines.len(),
        "need >= 10% duplicates"
    );
    let double = KillbillDouble::with_tenants(&[T0, T1]);
    register(&double, &events, &[T0, T1], &[]);
    produce_jsonl(&topic, &lines, Some("/trackingId"));

    let (config, envs) = write_config(
        dir.path(),
        &double,
        &[T0, T1],
        &[RouteSpec {
            name: "usage",
            topics: vec![&topic],
            sink: "killbill",
        }],
        "max_in_flight = 32\n",
        "\n[pipeline]\nmax_batch_records = 64\nprefetch_batches = 1\n",
    );
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(7);
    let mut rng = fastrand::Rng::with_seed(seed);
    eprintln!("kill bill crash test seed {seed}");

    let mut kills_mid_stream = 0;
    for k in 1..=KILLS {
        let target = distinct.len() * k / (KILLS + 2);
        let mut tally = spawn(dir.path(), &config, &envs);
        wait_kill_bill_accepted(&double, &mut tally, target, Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(rng.u64(0..60)));
        tally.kill();
        let after = double.accepted();
        if after < distinct.len() {
            kills_mid_stream += 1;
        }
        eprintln!(
            "kill {k}: {after} accepted, {} re-sends absorbed so far",
            double.duplicate_posts()
        );
    }

    let t0 = Instant::now();
    let mut tally = spawn(dir.path(), &config, &envs);
    wait_kill_bill_accepted(
        &double,
        &mut tally,
        distinct.len(),
        Duration::from_secs(120),
    );
    std::thread::sleep(Duration::from_millis(500));
    stop_cleanly(&mut tally);

    assert_exactly(&double, &events);
    assert_fully_committed(dir.path(), &config);
    assert!(
        kills_mid_stream >= 5,
        "only {kills_mid_stream} kills mid-stream"
    );
    eprintln!(
        "kill bill crash test: events={} distinct={} duplicate_events={} kills_mid_stream={} \
         accepted={} resends_answered_already_exists={} final_run={:?} statuses={:?}",
        lines.len(),
        distinct.len(),
        duplicate_events,
        kills_mid_stream,
        double.accepted(),
        double.duplicate_posts(),
        t0.elapsed(),
        double.statuses()
    );
}

#[test]
fn unmapped_tenant_is_replayed_once_after_the_config_maps_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("kb-replay");
    create_topic(&topic, 2);
    let lines = gen_usage(120, 0.0, 2, 41);
    let events: Vec<Expected> = lines.iter().map(|l| expected(l)).collect();
    let double = KillbillDouble::with_tenants(&[T0, T1]);
    register(&double, &events, &[T0, T1], &[]);
    let mapped_first = events.iter().filter(|e| e.tenant == T0).count();
    let later = events.len() - mapped_first;
    assert!(mapped_first > 0 && later > 0);
    let routes = [RouteSpec {
        name: "usage",
        topics: vec![&topic],
        sink: "killbill",
    }];
    // Only T0 has credentials: T1's events are dead-lettered (permanent).
    let (config, envs) = write_config(dir.path(), &double, &[T0], &routes, "", "");
    produce_jsonl(&topic, &lines, Some("/trackingId"));
    let mut tally = spawn(dir.path(), &config, &envs);
    wait_kill_bill_accepted(&double, &mut tally, mapped_first, Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(700));
    stop_cleanly(&mut tally);
    assert_fully_committed(dir.path(), &config);

    let cfg = config.to_str().unwrap().to_string();
    let env_refs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let dlq = |args: &[&str]| {
        let mut all = vec!["dlq"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--config", &cfg]);
        TallyProcess::run(dir.path(), &all, &env_refs, Duration::from_secs(60))
    };
    let listed = dlq(&["list", "--json"]);
    assert_eq!(listed.stdout.lines().count(), later, "{}", listed.stdout);
    assert!(
        listed.stdout.contains("has no credentials"),
        "{}",
        listed.stdout
    );

    // The fix is config: map T1. Replay delivers each once, with its trackingId.
    let (_, envs) = write_config(dir.path(), &double, &[T0, T1], &routes, "", "");
    let env_refs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let replay = TallyProcess::run(
        dir.path(),
        &["dlq", "replay", "--all", "--config", &cfg],
        &env_refs,
        Duration::from_secs(60),
    );
    assert!(
        replay.status.success(),
        "{}\n{}",
        replay.stdout,
        replay.stderr
    );
    assert!(
        replay
            .stdout
            .contains(&format!("replayed {later}, duplicate 0, still failing 0")),
        "{}",
        replay.stdout
    );
    assert_exactly(&double, &events);
    assert_eq!(double.duplicate_posts(), 0);
    assert!(dlq(&["list", "--json"]).stdout.trim().is_empty());

    // A restart delivers nothing again: offsets were never moved by the replay.
    let mut tally = spawn(dir.path(), &config, &envs);
    std::thread::sleep(Duration::from_secs(3));
    let log = stop_cleanly(&mut tally);
    assert_eq!(summary_field(&log, "delivered"), 0);
    assert_exactly(&double, &events);
}

/// Unmounts the test's tmpfs however the test ends.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// A `size`-byte tmpfs at `dir`, or why it cannot be had here.
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if out.status.success() {
            Ok(Tmpfs(dir.to_path_buf()))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Fill the filesystem holding `dir` with one file until the write fails
/// with ENOSPC; returns its path.
fn fill_disk(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).expect("create filler");
    let chunk = vec![0xA5u8; 4096];
    loop {
        match f.write_all(&chunk) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    let _ = f.sync_all();
    path
}

#[test]
fn store_disk_full_stops_tally_and_a_restart_delivers_every_record_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let _tmpfs = match Tmpfs::mount(&state, "8m") {
        Ok(t) => t,
        Err(why) => {
            eprintln!(
                "SKIPPED store_disk_full test: cannot mount a tmpfs here ({why}); needs root"
            );
            return;
        }
    };
    let topic = unique_topic("kb-disk-full");
    create_topic(&topic, 2);
    let lines = gen_usage(3000, 0.0, 2, 61);
    let events: Vec<Expected> = lines.iter().map(|l| expected(l)).collect();
    let double = KillbillDouble::with_tenants(&[T0, T1]);
    register(&double, &events, &[T0, T1], &[]);
    let (config, envs) = write_config(
        dir.path(),
        &double,
        &[T0, T1],
        &[RouteSpec {
            name: "usage",
            topics: vec![&topic],
            sink: "killbill",
        }],
        "",
        "\n[pipeline]\nmax_batch_records = 16\n",
    );

    let (first, rest) = lines.split_at(300);
    produce_jsonl(&topic, first, Some("/trackingId"));
    let mut tally = spawn(dir.path(), &config, &envs);
    wait_kill_bill_accepted(&double, &mut tally, first.len(), Duration::from_secs(90));

    let filler = fill_disk(&state);
    produce_jsonl(&topic, rest, Some("/trackingId"));
    let stopped = wait_until(Duration::from_secs(90), || !tally.is_running());
    assert!(
        stopped,
        "tally kept running on a full store disk:\n{}",
        tail(&tally.stderr())
    );
    let status = tally.terminate_and_wait(EXIT_TIMEOUT);
    let log = plain_log(&tally.stderr());
    assert!(!status.success(), "exit {status:?}:\n{}", tail(&log));
    let last = log
        .lines()
        .rev()
        .find(|l| l.contains("ENOSPC"))
        .unwrap_or_default();
    assert!(
        log.contains("ENOSPC") && log.contains(&state.display().to_string()),
        "the error must name the store and ENOSPC:\n{}",
        tail(&log)
    );
    eprintln!(
        "disk full: tally exited {status:?} with {} of {} records in Kill Bill; last error line: {last}",
        double.accepted(),
        lines.len()
    );

    std::fs::remove_file(&filler).expect("free the disk");
    let mut tally = spawn(dir.path(), &config, &envs);
    wait_kill_bill_accepted(&double, &mut tally, lines.len(), Duration::from_secs(120));
    stop_cleanly(&mut tally);
    assert_exactly(&double, &events);
    assert_fully_committed(dir.path(), &config);
    eprintln!(
        "after restart: {} records, each accepted once; {} re-sends answered 'already exists'",
        double.accepted(),
        double.duplicate_posts()
    );
}

/// `tally check --connect`: whether it passed, and its Kill Bill sink line.
fn check_connect_line(dir: &Path, config: &Path, envs: &[(String, String)]) -> (bool, String) {
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let out = TallyProcess::check_connect(dir, config, &envs);
    (out.status.success(), out.sink_line("killbill"))
}

#[test]
fn check_connect_probes_kill_bill_per_tenant_without_writing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let double = KillbillDouble::with_tenants(&[T0, T1]);
    let topic = unique_topic("kb-check");
    create_topic(&topic, 1);
    let routes = [RouteSpec {
        name: "usage",
        topics: vec![&topic],
        sink: "killbill",
    }];
    let (config, envs) = write_config(dir.path(), &double, &[T0, T1], &routes, "", "");
    let (ok, line) = check_connect_line(dir.path(), &config, &envs);
    assert!(ok, "{line}");
    assert!(
        line.contains("ok (") && line.contains(T0) && line.contains(T1),
        "{line}"
    );
    assert_eq!(double.accepted(), 0, "the probe must not post usage");

    // A wrong api secret for one tenant is named, and check fails.
    let wrong: Vec<(String, String)> = envs
        .iter()
        .map(|(k, v)| {
            let v = if k == "KB_SECRET_1" {
                "wrong"
            } else {
                v.as_str()
            };
            (k.clone(), v.to_string())
        })
        .collect();
    let (ok, line) = check_connect_line(dir.path(), &config, &wrong);
    assert!(!ok, "{line}");
    assert!(
        line.contains("FAILED") && line.contains(T1) && line.contains("credentials refused"),
        "{line}"
    );
    assert!(!line.contains("wrong"), "secret printed: {line}");

    // Nothing listening: the connect failure is the reason.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let text = std::fs::read_to_string(&config)
        .expect("config")
        .replace(&double.url(), &format!("http://127.0.0.1:{port}/"));
    std::fs::write(&config, text).expect("write config");
    let (ok, line) = check_connect_line(dir.path(), &config, &envs);
    assert!(
        !ok && line.contains("FAILED") && line.contains("connect"),
        "{line}"
    );
}

/// Kill Bill behind mutual TLS: with our CA and client certificate every
/// record is recorded exactly once; without the certificate `check
/// --connect` names the refusal and nothing is posted.
#[test]
fn https_with_a_client_certificate_delivers_once_and_without_one_is_refused() {
    use support::tls::{TestPki, TlsFront};
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = TestPki::generate(dir.path());
    let topic = unique_topic("kb-mtls");
    create_topic(&topic, 2);
    let lines = gen_usage(200, 0.1, 1, 61);
    let events: Vec<Expected> = lines.iter().map(|l| expected(l)).collect();
    let double = KillbillDouble::with_tenants(&[T0]);
    register(&double, &events, &[T0], &[]);
    produce_jsonl(&topic, &lines, Some("/trackingId"));
    let front = TlsFront::start(double.runtime(), double.router(), pki.server_config());

    let routes = [RouteSpec {
        name: "usage",
        topics: vec![&topic],
        sink: "killbill",
    }];
    let tls = |identity: bool| {
        let mut t = format!("ca_file = {:?}\n", pki.ca.display().to_string());
        if identity {
            t.push_str(&format!(
                "cert_file = {:?}\nkey_file = {:?}\n",
                pki.client_cert.display().to_string(),
                pki.client_key.display().to_string()
            ));
        }
        t
    };
    let https = format!("https://{}", front.addr);
    let write = |identity: bool| {
        let (config, envs) = write_config(dir.path(), &double, &[T0], &routes, &tls(identity), "");
        let text = std::fs::read_to_string(&config)
            .expect("config")
            .replace(&double.url(), &https);
        std::fs::write(&config, text).expect("write config");
        (config, envs)
    };

    let (config, envs) = write(false);
    // TLS 1.3 rejects a missing client certificate after the client's
    // handshake is done: the request may meet the server's alert
    // (CertificateRequired) or, under load, only the closed connection
    // ("connection was not ready"). Every attempt must be refused; one of
    // three must name the cause.
    let mut lines = Vec::new();
    for _ in 0..3 {
        let (ok, line) = check_connect_line(dir.path(), &config, &envs);
        assert!(!ok && line.contains("FAILED"), "{line}");
        let named = line.contains("CertificateRequired");
        lines.push(line);
        if named {
            break;
        }
    }
    assert!(
        lines
            .last()
            .is_some_and(|l| l.contains("CertificateRequired")),
        "{lines:#?}"
    );
    assert_eq!(
        double.requests(),
        0,
        "nothing reached Kill Bill without a certificate"
    );

    let (config, envs) = write(true);
    let (ok, line) = check_connect_line(dir.path(), &config, &envs);
    assert!(ok, "{line}");
    let distinct: BTreeSet<&str> = events.iter().map(|e| e.key.as_str()).collect();
    let mut tally = spawn(dir.path(), &config, &envs);
    wait_kill_bill_accepted(&double, &mut tally, distinct.len(), Duration::from_secs(60));
    stop_cleanly(&mut tally);
    assert_exactly(&double, &events);
    assert_eq!(double.duplicate_posts(), 0);
    assert!(front.handshakes_ok() >= 1 && front.handshakes_failed() >= 1);
    assert_fully_committed(dir.path(), &config);
}
