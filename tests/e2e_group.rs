//! End to end: several `tally run` processes in one consumer group
//! (`[assignment] mode = "group"`) over one 8-partition topic, against the
//! real broker: they share the partitions, rebalance when a member joins,
//! leaves, is SIGKILLed or freezes, and every record is delivered once in
//! total. Rebalance times and redundant deliveries are printed.
//! Needs scripts/test.sh (broker + Python tools).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;
use support::admin_http::{admin_up, free_port, get, metric, scrape};
use support::http_receiver::HttpReceiver;
use support::killbill_double::{KillbillDouble, sink_toml};
use support::logs::{plain_log, tail};
use support::*;

const PARTITIONS: u32 = 8;
const T0: &str = "0d96d663-00c1-4ff7-8324-d97cc551d6b3";
/// Generous: rebalances on the test broker take ~3-6 s, more on a loaded box.
const WAIT: Duration = Duration::from_secs(120);
const EXIT_TIMEOUT: Duration = Duration::from_secs(45);
const MAX_BATCH: usize = 20;

enum Sink<'a> {
    File,
    Killbill(&'a KillbillDouble),
    Http(&'a HttpReceiver),
}

/// One member: its own directory (store, delivered file, logs) and admin port.
struct Member {
    name: &'static str,
    dir: PathBuf,
    config: PathBuf,
    port: u16,
    envs: Vec<(String, String)>,
    proc: Option<TallyProcess>,
    started: Option<Instant>,
}

impl Member {
    fn new(root: &Path, name: &'static str, topic: &str, group: &str, sink: &Sink<'_>) -> Member {
        Member::with(root, name, &[topic], group, sink, "")
    }

    /// `kafka_extra` goes into `[kafka]`.
    fn with(
        root: &Path,
        name: &'static str,
        topics: &[&str],
        group: &str,
        sink: &Sink<'_>,
        kafka_extra: &str,
    ) -> Member {
        let topics: Vec<String> = topics.iter().map(|t| format!("{t:?}")).collect();
        let topics = topics.join(", ");
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).expect("member dir");
        let port = free_port();
        // Group mode requires a changelog; the group's members share it.
        let changelog = format!("{group}.changelog");
        create_topic(&changelog, PARTITIONS);
        let (sink_name, sink_table, envs) = match sink {
            Sink::File => (
                "file",
                format!(
                    "[sinks.file]\npath = {:?}\n",
                    dir.join("delivered.jsonl").display().to_string()
                ),
                Vec::new(),
            ),
            Sink::Killbill(double) => {
                let (text, envs) = sink_toml(double, &dir, &[T0], "max_in_flight = 4\n");
                ("killbill", text, envs)
            }
            Sink::Http(receiver) => (
                "http",
                // Calls outlive a freeze: only the fence may stop them.
                format!(
                    "[sinks.http]\nurl = {:?}\nmax_in_flight = 2\nrequest_timeout = \"60s\"\n",
                    receiver.url()
                ),
                Vec::new(),
            ),
        };
        let text = format!(
            r#"[kafka]
brokers = [{broker:?}]
{kafka_extra}
[store]
path = {store:?}
[assignment]
mode = "group"
group_id = {group:?}
session_timeout = "6s"
heartbeat_interval = "1s"
rebalance_timeout = "10s"
offset_commit_interval = "500ms"
[pipeline]
max_batch_records = {MAX_BATCH}
[[routes]]
name = "usage"
topics = [{topics}]
format = "killbill-usage"
sink = "{sink_name}"
start = "earliest"
changelog_topic = {changelog:?}
{sink_table}
[admin]
listen = "127.0.0.1:{port}"
"#,
            broker = broker(),
            store = dir.join("state").display().to_string(),
        );
        let config = dir.join("tally.toml");
        std::fs::write(&config, text).expect("write config");
        Member {
            name,
            dir,
            config,
            port,
            envs,
            proc: None,
            started: None,
        }
    }

    fn start(&mut self) {
        let envs: Vec<(&str, &str)> = self
            .envs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut p = TallyProcess::spawn_in(
            &self.dir,
            &["run", "--config", self.config.to_str().unwrap()],
            &envs,
        );
        let port = self.port;
        wait_for("the admin API to listen", WAIT, || {
            assert!(p.is_running(), "tally exited early:\n{}", tail(&p.stderr()));
            admin_up(port)
        });
        self.started = Some(Instant::now());
        self.proc = Some(p);
    }

    fn proc(&mut self) -> &mut TallyProcess {
        self.proc.as_mut().expect("member started")
    }

    fn log(&self) -> String {
        self.proc
            .as_ref()
            .map(|p| plain_log(&p.stderr()))
            .unwrap_or_default()
    }

    /// `GET /v1/group`, None while unreachable.
    fn group(&self) -> Option<Value> {
        if !admin_up(self.port) {
            return None;
        }
        let (status, body) = get(self.port, "/v1/group");
        (status == 200).then(|| serde_json::from_str(&body).expect("group view is JSON"))
    }

    fn delivered(&self) -> Vec<Value> {
        read_jsonl(self.dir.join("delivered.jsonl"))
    }

    /// SIGTERM; it must exit 0 having left the group.
    fn stop(&mut self) -> Duration {
        let t = Instant::now();
        let status = self.proc().terminate_and_wait(EXIT_TIMEOUT);
        let log = self.log();
        assert!(
            status.success(),
            "{} exit {status:?}:\n{}",
            self.name,
            tail(&log)
        );
        assert!(
            log.contains("left the group"),
            "{}:\n{}",
            self.name,
            tail(&log)
        );
        t.elapsed()
    }

    /// `tally offsets --json` on the stopped member's store.
    fn offsets_json(&self, offline: bool) -> Vec<Value> {
        let mut args = vec![
            "offsets",
            "--config",
            self.config.to_str().unwrap(),
            "--json",
        ];
        if offline {
            args.push("--offline");
        }
        let out = TallyProcess::run(&self.dir, &args, &[], Duration::from_secs(60));
        assert!(out.status.success(), "offsets: {}", out.stderr);
        out.json().as_array().cloned().expect("rows")
    }

    /// The store's offsets by partition (the member must be stopped).
    fn stored_offsets(&self) -> BTreeMap<i32, i64> {
        self.offsets_json(true)
            .iter()
            .map(|r| {
                (
                    r["partition"].as_i64().unwrap() as i32,
                    r["committed"].as_i64().unwrap(),
                )
            })
            .collect()
    }
}

fn owned_of(view: &Value) -> BTreeSet<i32> {
    view["owned"]
        .as_object()
        .map(|o| {
            o.values()
                .flat_map(|ps| ps.as_array().cloned().unwrap_or_default())
                .filter_map(|p| p.as_i64().map(|p| p as i32))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until every member is `stable` in one generation with disjoint
/// partitions that together cover the topic; returns each one's partitions.
fn wait_stable(members: &[&Member], what: &str) -> Vec<BTreeSet<i32>> {
    let mut last = String::new();
    let mut result = Vec::new();
    let ok = wait_until(WAIT, || {
        let views: Vec<Option<Value>> = members.iter().map(|m| m.group()).collect();
        last = format!("{views:?}");
        let Some(views) = views.into_iter().collect::<Option<Vec<Value>>>() else {
            return false;
        };
        let generations: BTreeSet<i64> = views
            .iter()
            .map(|v| v["generation"].as_i64().unwrap_or(-1))
            .collect();
        if views.iter().any(|v| v["state"] != "stable") || generations.len() != 1 {
            return false;
        }
        let owned: Vec<BTreeSet<i32>> = views.iter().map(owned_of).collect();
        let total: usize = owned.iter().map(BTreeSet::len).sum();
        let union: BTreeSet<i32> = owned.iter().flatten().copied().collect();
        if total != PARTITIONS as usize || union.len() != PARTITIONS as usize {
            return false;
        }
        assert!(
            views
                .iter()
                .all(|v| v["members"] == serde_json::json!(members.len())),
            "member count: {views:?}"
        );
        result = owned;
        true
    });
    assert!(ok, "{what}: no stable generation within {WAIT:?}: {last}");
    result
}

/// Produces usage events in batches until stopped (a live stream).
struct Stream {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Vec<String>>,
}

impl Stream {
    fn start(topic: &str, batch: usize, seed: u64) -> Stream {
        let stop = Arc::new(AtomicBool::new(false));
        let (s, topic) = (Arc::clone(&stop), topic.to_string());
        let handle = std::thread::spawn(move || {
            let mut all = Vec::new();
            let mut seed = seed;
            while !s.load(Ordering::Relaxed) {
                let lines = gen_usage(batch, 0.0, 1, seed);
                produce_jsonl(&topic, &lines, Some("/trackingId"));
                all.extend(lines);
                seed += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            all
        });
        Stream { stop, handle }
    }

    fn finish(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("producer thread")
    }
}

fn usage_key(line: &str) -> String {
    let v: Value = serde_json::from_str(line).expect("generated event");
    format!(
        "{}/{}/{}",
        v["tenantId"].as_str().unwrap(),
        v["subscriptionExternalKey"].as_str().unwrap(),
        v["trackingId"].as_str().unwrap()
    )
}

/// Every produced record is in the merged file sinks exactly once.
fn assert_files_exactly_once(members: &[&Member], produced: &[String]) -> usize {
    let want: BTreeSet<String> = produced.iter().map(|l| usage_key(l)).collect();
    assert_eq!(
        want.len(),
        produced.len(),
        "generated keys must be distinct"
    );
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut at: BTreeMap<(i64, i64), usize> = BTreeMap::new();
    for m in members {
        for line in m.delivered() {
            *seen
                .entry(line["dedupe_key"].as_str().unwrap().to_string())
                .or_default() += 1;
            *at.entry((
                line["partition"].as_i64().unwrap(),
                line["offset"].as_i64().unwrap(),
            ))
            .or_default() += 1;
        }
    }
    let missing = want.iter().filter(|k| !seen.contains_key(*k)).count();
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert_eq!(
        missing,
        0,
        "{missing} of {} records never delivered",
        want.len()
    );
    assert!(
        twice.is_empty(),
        "{} records delivered more than once, e.g. {:?}",
        twice.len(),
        &twice[..twice.len().min(5)]
    );
    assert_eq!(seen.len(), want.len(), "unexpected records delivered");
    assert!(at.values().all(|n| *n == 1));
    seen.len()
}

fn log_time(line: &str) -> Option<DateTime<Utc>> {
    let ts = line.split_whitespace().next()?;
    DateTime::parse_from_rfc3339(ts)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let pat = format!(" {name}=");
    let at = line.find(&pat)? + pat.len();
    line[at..].split_whitespace().next()
}

/// Per partition, the (from, until) times a member owned it.
type Spans = BTreeMap<i32, Vec<(DateTime<Utc>, DateTime<Utc>)>>;

/// When each partition was owned by this member, from its log: from
/// "partition assigned" to "partitions revoked" (or `end` if it died).
fn ownership(log: &str, end: DateTime<Utc>) -> Spans {
    let mut open: BTreeMap<i32, DateTime<Utc>> = BTreeMap::new();
    let mut spans: BTreeMap<i32, Vec<_>> = BTreeMap::new();
    for line in log.lines() {
        let Some(t) = log_time(line) else {
            continue;
        };
        if line.contains("partition assigned") {
            if let Some(p) = field(line, "partition").and_then(|p| p.parse().ok()) {
                open.insert(p, t);
            }
        } else if line.contains("partitions revoked")
            && let Some(list) = field(line, "partitions")
        {
            let inner = list
                .split_once(":[")
                .map_or("", |(_, r)| r.trim_end_matches(']'));
            for p in inner.split(',').filter_map(|p| p.parse::<i32>().ok()) {
                if let Some(from) = open.remove(&p) {
                    spans.entry(p).or_default().push((from, t));
                }
            }
        }
    }
    for (p, from) in open {
        spans.entry(p).or_default().push((from, end));
    }
    spans
}

/// No partition was owned by two members at once (by their logs).
fn assert_exclusive(spans: &[(&str, Spans)]) {
    for p in 0..PARTITIONS as i32 {
        let mut all: Vec<(DateTime<Utc>, DateTime<Utc>, &str)> = spans
            .iter()
            .flat_map(|(name, s)| {
                s.get(&p)
                    .into_iter()
                    .flatten()
                    .map(move |(a, b)| (*a, *b, *name))
            })
            .collect();
        all.sort();
        for w in all.windows(2) {
            assert!(
                w[1].0 >= w[0].1,
                "partition {p} owned by {} from {} while {} owned it until {}",
                w[1].2,
                w[1].0,
                w[0].2,
                w[0].1
            );
        }
        assert!(!all.is_empty(), "partition {p} was never owned");
    }
}

/// The group's committed offsets as confluent-kafka reads them.
fn group_committed(group: &str, topic: &str) -> BTreeMap<String, i64> {
    let v = run_kafka_tool(
        &[
            "group",
            "--broker",
            &broker(),
            "--group",
            group,
            "--topic",
            topic,
            "--partitions",
            &PARTITIONS.to_string(),
        ],
        None,
    );
    v["committed"]
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(p, off)| (p.clone(), off.as_i64().unwrap_or(-1)))
                .collect()
        })
        .unwrap_or_default()
}

fn last_rebalance_seconds(m: &Member) -> f64 {
    metric(
        &scrape(m.port),
        "tally_group_last_rebalance_duration_seconds",
        &[],
    )
    .unwrap_or(-1.0)
}

#[test]
fn members_join_and_leave_mid_stream_and_every_record_is_delivered_once() {
    let root = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("group-share");
    let group = unique_topic("g-share");
    create_topic(&topic, PARTITIONS);
    let mut a = Member::new(root.path(), "a", &topic, &group, &Sink::File);
    let mut b = Member::new(root.path(), "b", &topic, &group, &Sink::File);
    let mut c = Member::new(root.path(), "c", &topic, &group, &Sink::File);
    let stream = Stream::start(&topic, 100, 1000);

    // Two members.
    let t = Instant::now();
    a.start();
    b.start();
    let two = wait_stable(&[&a, &b], "a + b");
    let two_took = t.elapsed();
    assert!(two.iter().all(|s| s.len() == 4), "balanced: {two:?}");
    wait_for("both members to deliver", WAIT, || {
        !a.delivered().is_empty() && !b.delivered().is_empty()
    });
    let first_delivery = t.elapsed();

    // A third joins late, mid-stream.
    let t = Instant::now();
    c.start();
    let three = wait_stable(&[&a, &b, &c], "a + b + c");
    let join_took = t.elapsed();
    let sizes: Vec<usize> = three.iter().map(BTreeSet::len).collect();
    assert!(
        sizes.iter().all(|n| (2..=3).contains(n)),
        "balanced: {three:?}"
    );
    // Sticky: a and b kept partitions they had.
    assert!(
        three[0].is_subset(&two[0]) && three[1].is_subset(&two[1]),
        "{two:?} -> {three:?}"
    );
    let c_lines = c.delivered().len();
    wait_for("the late joiner to deliver", WAIT, || {
        c.delivered().len() > c_lines
    });
    let join_to_delivery = t.elapsed();

    // b leaves gracefully, mid-stream: its partitions move at once.
    let t = Instant::now();
    let b_exit = b.stop();
    let b_end = Utc::now();
    let after = wait_stable(&[&a, &c], "a + c after b left");
    let leave_took = t.elapsed();
    assert!(after[0].is_superset(&three[0]) && after[1].is_superset(&three[2]));

    let produced = stream.finish();
    wait_for("every record delivered", WAIT, || {
        a.delivered().len() + b.delivered().len() + c.delivered().len() >= produced.len()
    });
    // `tally offsets` through a running member's admin API shows the group.
    let out = TallyProcess::run(
        &a.dir,
        &["offsets", "--config", a.config.to_str().unwrap(), "--json"],
        &[],
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "offsets: {}", out.stderr);
    let a_view = a.group().expect("a's group view");
    for row in out.json().as_array().expect("rows") {
        assert_eq!(row["group"], group.as_str(), "{row}");
        assert_eq!(row["generation"], a_view["generation"], "{row}");
        assert_eq!(row["member"], a_view["member_id"], "{row}");
        let p = row["partition"].as_i64().unwrap() as i32;
        assert_eq!(row["owned"], after[0].contains(&p), "{row}");
    }
    let text = TallyProcess::run(
        &a.dir,
        &["offsets", "--config", a.config.to_str().unwrap()],
        &[],
        Duration::from_secs(60),
    );
    assert!(
        text.stdout
            .starts_with(&format!("# group {group} generation "))
            && text.stdout.contains("OWNED"),
        "{}",
        text.stdout
    );
    let rebalance_metric = (last_rebalance_seconds(&a), last_rebalance_seconds(&c));

    a.stop();
    let a_end = Utc::now();
    c.stop();
    let c_end = Utc::now();
    let delivered = assert_files_exactly_once(&[&a, &b, &c], &produced);
    assert_exclusive(&[
        ("a", ownership(&a.log(), a_end)),
        ("b", ownership(&b.log(), b_end)),
        ("c", ownership(&c.log(), c_end)),
    ]);
    // The group's offsets were mirrored to Kafka up to the log end.
    let committed = group_committed(&group, &topic);
    let total: i64 = committed.values().sum();
    assert_eq!(
        total as usize,
        produced.len(),
        "group offsets {committed:?}"
    );
    let check = TallyProcess::check_connect(&a.dir, &a.config, &[]);
    assert!(
        check.status.success()
            && check.stdout.contains(&format!(
                "# group {group}: ok (coordinator {}, committed offsets for 8 partition(s))",
                broker()
            )),
        "{}{}",
        check.stdout,
        check.stderr
    );
    eprintln!(
        "group share: records={delivered} redundant=0 | a+b stable after {two_took:?} (first deliveries \
         from both after {first_delivery:?}) | c joined: stable after {join_took:?}, delivering after \
         {join_to_delivery:?} | b left (SIGTERM exit {b_exit:?}): a+c stable after {leave_took:?} | \
         last rebalance a={:.2}s c={:.2}s",
        rebalance_metric.0, rebalance_metric.1
    );
}

/// Registers the subscriptions gen_usage draws from (tenant 0, 50 keys).
fn register_subscriptions(double: &KillbillDouble) {
    for i in 0..50 {
        double.add_subscription(T0, &format!("sub-00-{i:04}"));
    }
}

/// Where each member's log says it started `partition` after `since`.
fn start_offsets_after(log: &str, since: DateTime<Utc>) -> BTreeMap<i32, i64> {
    log.lines()
        .filter(|l| l.contains("partition assigned"))
        .filter(|l| log_time(l).is_some_and(|t| t > since))
        .filter_map(|l| {
            Some((
                field(l, "partition")?.parse().ok()?,
                field(l, "offset")?.parse().ok()?,
            ))
        })
        .collect()
}

#[test]
fn sigkilled_member_s_partitions_move_and_kill_bill_holds_every_record_once() {
    let root = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("group-kill");
    let group = unique_topic("g-kill");
    create_topic(&topic, PARTITIONS);
    let double = KillbillDouble::with_tenants(&[T0]);
    register_subscriptions(&double);
    // Slow enough that the killed member is mid-stream.
    double.set_latency(Duration::from_millis(15));
    let sink = Sink::Killbill(&double);
    let mut a = Member::new(root.path(), "a", &topic, &group, &sink);
    let mut b = Member::new(root.path(), "b", &topic, &group, &sink);
    let mut c = Member::new(root.path(), "c", &topic, &group, &sink);
    a.start();
    b.start();
    c.start();
    let owned = wait_stable(&[&a, &b, &c], "a + b + c");
    let stream = Stream::start(&topic, 150, 2000);
    wait_for("deliveries to flow", WAIT, || double.accepted() >= 600);

    let b_owned = owned[1].clone();
    b.proc().kill();
    let killed = Instant::now();
    let killed_at = Utc::now();
    let accepted_at_kill = double.accepted();
    let after = wait_stable(&[&a, &c], "a + c after b was killed");
    let takeover = killed.elapsed();
    assert!(
        b_owned
            .iter()
            .all(|p| after[0].contains(p) || after[1].contains(p)),
        "b's partitions {b_owned:?} moved: {after:?}"
    );
    std::thread::sleep(Duration::from_secs(1));
    let produced = stream.finish();
    let want: BTreeSet<String> = produced.iter().map(|l| usage_key(l)).collect();
    wait_for("every record in Kill Bill", WAIT, || {
        double.accepted() >= want.len()
    });
    let all_in = killed.elapsed();
    a.stop();
    c.stop();

    let held = double.records();
    let missing = want.iter().filter(|k| !held.contains_key(*k)).count();
    assert_eq!(missing, 0, "{missing} records never reached Kill Bill");
    assert_eq!(held.len(), want.len(), "unexpected records in Kill Bill");
    for (key, rec) in &held {
        assert_eq!(rec.count, 1, "{key} accepted {} times", rec.count);
    }
    // Redundant posts ("already exists"), only from b's partitions: what b
    // committed locally past the group's offset, plus one chunk per
    // partition it had acknowledged but not committed when killed.
    let redundant = double.duplicate_posts();
    let b_stored = b.stored_offsets();
    let mut starts = start_offsets_after(&a.log(), killed_at);
    starts.extend(start_offsets_after(&c.log(), killed_at));
    let mut bound = 0u64;
    for p in &b_owned {
        let start = *starts
            .get(p)
            .unwrap_or_else(|| panic!("no new owner started {p}"));
        let stored = b_stored.get(p).copied().unwrap_or(0);
        bound += (stored - start).max(0) as u64 + MAX_BATCH as u64;
    }
    eprintln!(
        "group kill: records={} accepted_at_kill={accepted_at_kill} redundant_posts={redundant} \
         (bound {bound}: b's store {b_stored:?}, new owners started at {starts:?}) | kill -> \
         survivors stable {takeover:?}, -> all delivered {all_in:?} | statuses {:?}",
        want.len(),
        double.statuses()
    );
    assert!(redundant <= bound, "{redundant} redundant posts > {bound}");
    // b's stopped store, beside the group's offsets (the survivors went on).
    for row in b.offsets_json(false) {
        assert_eq!(row["group"], group.as_str(), "{row}");
        assert!(
            row["group_committed"].as_i64().unwrap_or(-1) >= row["committed"].as_i64().unwrap(),
            "{row}"
        );
    }
}

/// Accepted POSTs by usage key, over the receivers.
fn posts_by_key(receivers: &[&HttpReceiver]) -> BTreeMap<String, usize> {
    let mut by = BTreeMap::new();
    for r in receivers {
        for got in r.received().iter().filter(|g| g.status == 200) {
            let line = std::str::from_utf8(&got.body).expect("UTF-8 body");
            *by.entry(usage_key(line)).or_default() += 1;
        }
    }
    by
}

#[test]
fn frozen_member_is_fenced_and_sends_nothing_after_its_partitions_moved() {
    let root = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("group-freeze");
    let group = unique_topic("g-freeze");
    create_topic(&topic, PARTITIONS);
    let (ra, rb) = (HttpReceiver::start(), HttpReceiver::start());
    // a's endpoint is slow, so a is in the middle of a sink call (and has
    // more records in hand) when it freezes.
    ra.set_latency(Duration::from_millis(200));
    let mut a = Member::new(root.path(), "a", &topic, &group, &Sink::Http(&ra));
    let mut b = Member::new(root.path(), "b", &topic, &group, &Sink::Http(&rb));
    a.start();
    b.start();
    wait_stable(&[&a, &b], "a + b");
    let first = gen_usage(240, 0.0, 1, 3000);
    produce_jsonl(&topic, &first, Some("/trackingId"));
    wait_for("a to be mid-stream", WAIT, || ra.requests() >= 20);

    // a freezes (a VM pause, a stuck host): its session runs out while it
    // cannot notice; b takes everything over.
    a.proc().signal("STOP");
    let frozen = Instant::now();
    let alone = wait_stable(&[&b], "b alone");
    let takeover = frozen.elapsed();
    assert_eq!(alone[0].len(), PARTITIONS as usize);
    wait_for("b to deliver the rest", WAIT, || {
        posts_by_key(&[&ra, &rb]).len() >= first.len()
    });

    // a wakes up in a sink call, with more records fetched and a stale
    // generation: it must not start another POST, and rejoins instead.
    let a_posts = ra.requests();
    ra.set_latency(Duration::ZERO);
    a.proc().signal("CONT");
    let woke = Instant::now();
    let both = wait_stable(&[&a, &b], "a rejoined");
    let rejoin = woke.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let log = a.log();
    let fenced: Vec<&str> = log.lines().filter(|l| l.contains("fenced")).collect();
    assert!(!fenced.is_empty(), "{}", tail(&log));
    assert!(metric(&scrape(a.port), "tally_group_fenced_total", &[]).unwrap_or(0.0) >= 1.0);
    assert_eq!(ra.requests(), a_posts, "a sent after its session ended");

    let third = gen_usage(80, 0.0, 1, 3001);
    produce_jsonl(&topic, &third, Some("/trackingId"));
    let mut all = first;
    all.extend(third);
    wait_for("the last records", WAIT, || {
        posts_by_key(&[&ra, &rb]).len() >= all.len()
    });
    a.stop();
    b.stop();
    let posts = posts_by_key(&[&ra, &rb]);
    let want: BTreeSet<String> = all.iter().map(|l| usage_key(l)).collect();
    assert!(
        want.iter().all(|k| posts.contains_key(k)),
        "records missing"
    );
    assert_eq!(posts.len(), want.len(), "unexpected records");
    // Only what a had acknowledged but not yet committed to the group
    // when it froze is sent twice.
    let redundant: usize = posts.values().map(|n| n - 1).sum();
    eprintln!(
        "group freeze: records={} a_posts_before_freeze={a_posts} redundant_posts={redundant} | \
         a frozen -> b owns all 8 after {takeover:?} | a woken -> stable again after {rejoin:?}, \
         owning {:?} | a's log: {fenced:?}",
        want.len(),
        both[0]
    );
    assert!(
        redundant <= a_posts,
        "{redundant} redundant > {a_posts} sent by a"
    );
}

#[test]
fn a_topic_created_later_is_assigned_at_the_next_metadata_refresh() {
    let root = tempfile::tempdir().expect("tempdir");
    let (early, late) = (unique_topic("group-early"), unique_topic("group-late"));
    let group = unique_topic("g-late");
    create_topic(&early, 2);
    let mut a = Member::with(
        root.path(),
        "a",
        &[&early, &late],
        &group,
        &Sink::File,
        "metadata_refresh = \"1s\"",
    );
    a.start();
    let owned = |a: &Member, topic: &str| -> Vec<i64> {
        a.group()
            .filter(|v| v["state"] == "stable")
            .and_then(|v| v["owned"][topic].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(Value::as_i64)
            .collect()
    };
    wait_for("the early topic assigned", WAIT, || {
        owned(&a, &early) == [0, 1]
    });
    assert!(owned(&a, &late).is_empty());
    create_topic(&late, 3);
    let t = Instant::now();
    wait_for("the late topic assigned", WAIT, || {
        owned(&a, &late) == [0, 1, 2]
    });
    let took = t.elapsed();
    assert_eq!(owned(&a, &early), [0, 1], "the early topic stays");
    let events = gen_usage(30, 0.0, 1, 4000);
    produce_jsonl(&late, &events, Some("/trackingId"));
    wait_for("the late topic's records", WAIT, || {
        a.delivered().len() >= events.len()
    });
    a.stop();
    assert_files_exactly_once(&[&a], &events);
    eprintln!("group late topic: assigned {took:?} after it was created (metadata_refresh 1s)");
}
