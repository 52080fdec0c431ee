//! End to end: the changelog topic (`changelog_topic`) — the real `tally`
//! binary, the test broker and the Kill Bill double. A deleted store is
//! rebuilt from the changelog and re-delivers nothing; SIGKILLs with the
//! store deleted between runs keep every record exactly once; a missing or
//! too small changelog topic holds its partitions back.
//! Needs scripts/test.sh (broker + Python tools).

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use support::killbill_double::{KillbillDouble, sink_toml};
use support::logs::{plain_log, summary_field, tail};
use support::*;

const T0: &str = "0d96d663-00c1-4ff7-8324-d97cc551d6b3";
const T1: &str = "6f1e0a52-9b7d-4c1e-a3f5-2d8b7c9e4f10";
const RESTORED: &str = "restored tracking IDs from the changelog";
/// Generous: group rebalances take ~5 s on the test broker, more on a loaded box.
const WAIT: Duration = Duration::from_secs(120);

/// The dedupe key of a generated usage event, and its (tenant, subscription).
fn key_of(event: &str) -> (String, (String, String)) {
    let v: Value = serde_json::from_str(event).expect("generated event is JSON");
    let s = |f: &str| v[f].as_str().unwrap_or_default().to_string();
    let (tenant, sub) = (s("tenantId"), s("subscriptionExternalKey"));
    (format!("{tenant}/{sub}/{}", s("trackingId")), (tenant, sub))
}

fn distinct_keys(events: &[String]) -> BTreeSet<String> {
    events.iter().map(|e| key_of(e).0).collect()
}

fn register(double: &KillbillDouble, events: &[String]) {
    let pairs: BTreeSet<(String, String)> = events.iter().map(|e| key_of(e).1).collect();
    for (t, s) in pairs {
        double.add_subscription(&t, &s);
    }
}

/// One Kill Bill route with `changelog_topic`; returns the config path and
/// the environment tally needs for the secrets.
fn write_config(
    dir: &Path,
    double: &KillbillDouble,
    topic: &str,
    changelog: &str,
    extra: &str,
) -> (PathBuf, Vec<(String, String)>) {
    let (kb, envs) = sink_toml(double, dir, &[T0, T1], "max_in_flight = 32\n");
    let text = format!(
        "[kafka]\nbrokers = [{:?}]\n[store]\npath = {:?}\n\n[[routes]]\nname = \"usage\"\n\
         topics = [{topic:?}]\nformat = \"killbill-usage\"\nsink = \"killbill\"\n\
         changelog_topic = {changelog:?}\n\n{kb}\n{extra}",
        broker(),
        dir.join("state").display().to_string(),
    );
    let path = dir.join("tally.toml");
    std::fs::write(&path, text).expect("write config");
    (path, envs)
}

fn spawn(dir: &Path, config: &Path, envs: &[(String, String)]) -> TallyProcess {
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    TallyProcess::spawn_in(dir, &["run", "--config", config.to_str().unwrap()], &envs)
}

/// `name=N` of a log line (tracing's `key=value` fields).
fn field(line: &str, name: &str) -> Option<u64> {
    let pat = format!(" {name}=");
    let at = line.find(&pat)? + pat.len();
    line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()
}

/// The restore lines of a log: (ids read, ids the store did not have).
fn restores(log: &str) -> Vec<(u64, u64)> {
    plain_log(log)
        .lines()
        .filter(|l| l.contains(RESTORED))
        .map(|l| {
            (
                field(l, "ids").unwrap_or_else(|| panic!("ids in {l}")),
                field(l, "new_ids").unwrap_or_else(|| panic!("new_ids in {l}")),
            )
        })
        .collect()
}

/// Every distinct key accepted exactly once, nothing else.
fn assert_exactly_once(double: &KillbillDouble, want: &BTreeSet<String>) {
    let held = double.records();
    let got: BTreeSet<String> = held.keys().cloned().collect();
    let missing: Vec<&String> = want.difference(&got).collect();
    assert!(
        missing.is_empty(),
        "{} missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(3)]
    );
    let extra: Vec<&String> = got.difference(want).collect();
    assert!(extra.is_empty(), "unexpected: {extra:?}");
    for (k, r) in &held {
        assert_eq!(r.count, 1, "{k} accepted {} times", r.count);
    }
}

/// The dedupe keys a file sink wrote, in order.
fn delivered_keys(out: &Path) -> Vec<String> {
    read_jsonl(out)
        .iter()
        .filter_map(|l| l["dedupe_key"].as_str().map(str::to_string))
        .collect()
}

/// A `json` route deduplicating on `/id` with `changelog_topic`, into the
/// file sink, dead-lettering values over `max_record_bytes`.
fn json_changelog_config(
    dir: &Path,
    topic: &str,
    changelog: &str,
    max_record_bytes: usize,
) -> PathBuf {
    write_file_sink_config(
        dir,
        &[topic],
        "json",
        &format!(
            "dedupe = \"/id\"\nchangelog_topic = {changelog:?}\nmax_record_bytes = {max_record_bytes}\n"
        ),
        "",
    )
}

/// `tally dlq replay --all` on a stopped store; it must succeed. Its
/// stdout (one line per letter).
fn replay_all(dir: &Path, config: &Path) -> String {
    let replay = TallyProcess::run(
        dir,
        &[
            "dlq",
            "replay",
            "--config",
            config.to_str().unwrap(),
            "--all",
        ],
        &[],
        Duration::from_secs(60),
    );
    assert!(
        replay.status.success(),
        "{}\n{}",
        replay.stdout,
        replay.stderr
    );
    replay.stdout
}

/// Wait until `out` has `lines` lines, failing if `tally` exits first.
fn wait_delivered(tally: &mut TallyProcess, out: &Path, lines: usize) {
    wait_for("delivered", Duration::from_secs(60), || {
        assert!(tally.is_running(), "{}", tail(&tally.stderr()));
        count_lines(out) >= lines
    });
}

/// Run `tally run` in `dir` until `out` has `lines` lines, then stop it
/// cleanly; its log.
fn run_until_delivered(dir: &Path, config: &Path, out: &Path, lines: usize) -> String {
    let mut tally =
        TallyProcess::spawn_in(dir, &["run", "--config", config.to_str().unwrap()], &[]);
    wait_delivered(&mut tally, out, lines);
    std::thread::sleep(Duration::from_millis(300));
    stop_cleanly(&mut tally)
}

/// Delete the store, restart: the partitions restore every ID from the
/// changelog before fetching, re-read what they committed, and post
/// nothing again — neither the old records nor duplicates of old tracking
/// IDs produced after the restart. Kill Bill's own duplicate check is not
/// what catches them: the double counts every redundant post.
#[test]
fn a_deleted_store_is_rebuilt_from_the_changelog_and_redelivers_nothing() {
    const PARTITIONS: u32 = 4;
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("cl-src");
    let changelog = unique_topic("cl-log");
    create_topic(&topic, PARTITIONS);
    create_topic(&changelog, PARTITIONS);
    let events = gen_usage(3000, 0.1, 2, 61);
    let distinct = distinct_keys(&events);
    assert!(events.len() - distinct.len() >= 200, "need duplicates");
    let later = gen_usage(100, 0.0, 2, 62);
    let double = KillbillDouble::with_tenants(&[T0, T1]);
    register(&double, &events);
    register(&double, &later);
    produce_jsonl(&topic, &events, Some("/trackingId"));
    let (config, envs) = write_config(dir.path(), &double, &topic, &changelog, "");

    let mut tally = spawn(dir.path(), &config, &envs);
    wait_kill_bill_accepted(&double, &mut tally, distinct.len(), WAIT);
    let first = stop_cleanly(&mut tally);
    assert_eq!(
        restores(&first).len(),
        PARTITIONS as usize,
        "{}",
        tail(&first)
    );
    assert_eq!(double.duplicate_posts(), 0, "first run posted a duplicate");
    let requests_before = double.requests();

    std::fs::remove_dir_all(dir.path().join("state")).expect("delete the store");
    let mut tally = spawn(dir.path(), &config, &envs);
    wait_for("every partition restored", Duration::from_secs(60), || {
        assert!(tally.is_running(), "{}", tail(&tally.stderr()));
        restores(&tally.stderr()).len() == PARTITIONS as usize
    });
    // Duplicates of 500 delivered tracking IDs, then 100 new events: once
    // the new ones are in Kill Bill, every partition is past the duplicates.
    let dups: Vec<String> = events.iter().take(500).cloned().collect();
    produce_jsonl(&topic, &dups, Some("/trackingId"));
    produce_jsonl(&topic, &later, Some("/trackingId"));
    let mut want = distinct.clone();
    want.extend(distinct_keys(&later));
    wait_kill_bill_accepted(&double, &mut tally, want.len(), WAIT);
    std::thread::sleep(Duration::from_millis(500));
    let second = stop_cleanly(&mut tally);
    assert_fully_committed(dir.path(), &config);

    let restored: u64 = restores(&second).iter().map(|(ids, _)| ids).sum();
    let new: u64 = restores(&second).iter().map(|(_, new)| new).sum();
    assert_eq!(restored, distinct.len() as u64, "{}", tail(&second));
    assert_eq!(new, restored, "a deleted store holds none of them");
    assert_exactly_once(&double, &want);
    assert_eq!(
        double.duplicate_posts(),
        0,
        "redundant posts after the rebuild"
    );
    assert_eq!(summary_field(&second, "delivered"), later.len() as u64);
    assert!(summary_field(&second, "duplicates") >= dups.len() as u64);
    eprintln!(
        "changelog rebuild: events={} distinct={} restored_ids={restored} kill bill requests \
         before={requests_before} after={} redundant_posts={}",
        events.len(),
        distinct.len(),
        double.requests(),
        double.duplicate_posts()
    );
}

/// The crash test pattern with the changelog on: SIGKILL mid-stream, and
/// before every other restart delete the store too. Every record ends in
/// Kill Bill exactly once; redundant posts stay within one unrecorded
/// batch per partition per kill (a kill between the sink's ack and the
/// changelog write — a kill between the changelog write and the store
/// commit costs none: the restart's restore applies those IDs).
#[test]
fn sigkill_with_the_store_deleted_between_runs_keeps_every_record_exactly_once() {
    const EVENTS: usize = 8000;
    const PARTITIONS: u32 = 4;
    const KILLS: usize = 6;
    const MAX_BATCH: usize = 64;
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("cl-crash");
    let changelog = unique_topic("cl-crash-log");
    create_topic(&topic, PARTITIONS);
    create_topic(&changelog, PARTITIONS);
    let events = gen_usage(EVENTS, 0.12, 2, 71);
    let distinct = distinct_keys(&events);
    let double = KillbillDouble::with_tenants(&[T0, T1]);
    register(&double, &events);
    produce_jsonl(&topic, &events, Some("/trackingId"));
    let (config, envs) = write_config(
        dir.path(),
        &double,
        &topic,
        &changelog,
        &format!("[pipeline]\nmax_batch_records = {MAX_BATCH}\nprefetch_batches = 1\n"),
    );
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(7);
    let mut rng = fastrand::Rng::with_seed(seed);
    eprintln!("changelog crash test seed {seed}");

    let mut kills_mid_stream = 0;
    let mut deleted = 0;
    // IDs a restart with its store kept found in the changelog but not in
    // the store: kills that landed between the changelog write and the commit.
    let mut recovered_ids = 0;
    for k in 1..=KILLS {
        let target = distinct.len() * k / (KILLS + 2);
        let mut tally = spawn(dir.path(), &config, &envs);
        wait_kill_bill_accepted(&double, &mut tally, target, WAIT);
        std::thread::sleep(Duration::from_millis(rng.u64(0..60)));
        tally.kill();
        if k % 2 == 0 {
            // This run started on the store the previous kill left.
            recovered_ids += restores(&tally.stderr())
                .iter()
                .map(|(_, new)| new)
                .sum::<u64>();
        }
        if double.accepted() < distinct.len() {
            kills_mid_stream += 1;
        }
        if k % 2 == 0 {
            std::fs::remove_dir_all(dir.path().join("state")).expect("delete the store");
            deleted += 1;
        }
        eprintln!(
            "kill {k}: {} accepted, {} redundant posts so far",
            double.accepted(),
            double.duplicate_posts()
        );
    }
    let mut tally = spawn(dir.path(), &config, &envs);
    wait_kill_bill_accepted(&double, &mut tally, distinct.len(), WAIT);
    std::thread::sleep(Duration::from_millis(500));
    stop_cleanly(&mut tally);

    assert_exactly_once(&double, &distinct);
    assert_fully_committed(dir.path(), &config);
    assert!(
        kills_mid_stream >= 5,
        "only {kills_mid_stream} kills mid-stream"
    );
    let bound = (kills_mid_stream * PARTITIONS as usize * MAX_BATCH) as u64;
    eprintln!(
        "changelog crash test: events={} distinct={} kills_mid_stream={kills_mid_stream} \
         stores_deleted={deleted} redundant_posts={} (bound {bound}) ids_recovered_from_the_changelog_on_kept_stores={recovered_ids}",
        events.len(),
        distinct.len(),
        double.duplicate_posts()
    );
    assert!(
        double.duplicate_posts() <= bound,
        "{} redundant posts exceed {bound}",
        double.duplicate_posts()
    );
}

/// A changelog topic that does not exist, or has fewer partitions than
/// the source topic, holds the route's partitions before they deliver
/// anything, saying what to fix; fixed, they deliver everything.
#[test]
fn a_missing_or_too_small_changelog_topic_holds_the_partitions_until_fixed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let topic = unique_topic("cl-wait-src");
    let changelog = unique_topic("cl-wait-log");
    create_topic(&topic, 2);
    let lines: Vec<String> = (0..40).map(|i| format!(r#"{{"id":"e{i}"}}"#)).collect();
    produce_jsonl(&topic, &lines, Some("/id"));
    let write = |changelog: &str| {
        write_file_sink_config(
            d,
            &[&topic],
            "json",
            &format!("dedupe = \"/id\"\nchangelog_topic = {changelog:?}\n"),
            "\n[pipeline]\nretry_max = \"1s\"\n",
        )
    };
    let config = write(&changelog);
    let check_line = |config: &Path| {
        let out = TallyProcess::check_connect(d, config, &[]);
        out.stdout
            .lines()
            .find(|l| l.starts_with("# changelog topic"))
            .unwrap_or_else(|| panic!("no changelog line:\n{}{}", out.stdout, out.stderr))
            .to_string()
    };
    let line = check_line(&config);
    assert!(
        line.contains("FAILED (does not exist; create it with at least 2 partitions"),
        "{line}"
    );
    let out = d.join("delivered.jsonl");
    let run = || TallyProcess::spawn_in(d, &["run", "--config", config.to_str().unwrap()], &[]);
    let waits_with = |tally: &mut TallyProcess, what: &str| {
        wait_for(what, Duration::from_secs(60), || {
            assert!(tally.is_running(), "{}", tail(&tally.stderr()));
            // Both partitions, at least twice each.
            plain_log(&tally.stderr()).matches(what).count() >= 4
        });
        assert_eq!(count_lines(&out), 0, "delivered without a changelog");
    };

    let mut tally = run();
    waits_with(
        &mut tally,
        &format!("changelog topic {changelog} does not exist"),
    );
    create_topic(&changelog, 1);
    waits_with(
        &mut tally,
        &format!("changelog topic {changelog} has 1 partitions but source topic {topic} has 2"),
    );
    let log = stop_cleanly(&mut tally);
    assert!(!log.contains(RESTORED), "{}", tail(&log));
    let line = check_line(&config);
    assert!(
        line.contains("FAILED (1 partitions, the route's topics have up to 2"),
        "{line}"
    );

    let fixed = unique_topic("cl-wait-log2");
    create_topic(&fixed, 2);
    let config = write(&fixed);
    let line = check_line(&config);
    assert!(
        line.ends_with("ok (2 partitions, the route's topics need 2)"),
        "{line}"
    );
    let mut tally = TallyProcess::spawn_in(d, &["run", "--config", config.to_str().unwrap()], &[]);
    wait_for("every record delivered", Duration::from_secs(60), || {
        assert!(tally.is_running(), "{}", tail(&tally.stderr()));
        count_lines(&out) >= lines.len()
    });
    let log = stop_cleanly(&mut tally);
    assert_eq!(restores(&log).len(), 2, "{}", tail(&log));
    let keys: BTreeSet<String> = delivered_keys(&out).into_iter().collect();
    assert_eq!((keys.len(), count_lines(&out)), (lines.len(), lines.len()));
}

/// `dlq replay` records what it delivers in the changelog too: after the
/// store is deleted, a duplicate of the replayed record is skipped, not
/// delivered a second time.
#[test]
fn ids_delivered_by_dlq_replay_are_in_the_changelog() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let topic = unique_topic("cl-replay-src");
    let changelog = unique_topic("cl-replay-log");
    create_topic(&topic, 1);
    create_topic(&changelog, 1);
    let big = r#"{"id":"big","pad":"more than forty bytes of value"}"#;
    produce_raw(&topic, big.as_bytes(), None);
    produce_raw(&topic, br#"{"id":"a"}"#, None);
    let config = json_changelog_config(d, &topic, &changelog, 40);
    let out = d.join("delivered.jsonl");
    let run_until = |lines: usize| run_until_delivered(d, &config, &out, lines);
    let log = run_until(1);
    assert!(log.contains("kept in dead letters"), "{}", tail(&log));

    json_changelog_config(d, &topic, &changelog, 1 << 20);
    replay_all(d, &config);
    assert_eq!(count_lines(&out), 2);

    std::fs::remove_dir_all(d.join("state")).expect("delete the store");
    produce_raw(&topic, big.as_bytes(), None);
    produce_raw(&topic, br#"{"id":"c"}"#, None);
    let log = run_until(3);
    assert_eq!(delivered_keys(&out), ["a", "big", "c"], "{}", tail(&log));
    assert_eq!(restores(&log), [(2, 2)], "{}", tail(&log));
    assert_eq!(summary_field(&log, "delivered"), 1);
}

/// The changelog position a store keeps moves only over records it wrote
/// itself. Store A held the partition first and dead-lettered a record;
/// store B took the partition over (restored from the changelog); then A's
/// `dlq replay` recorded the replayed ID in the partition's changelog while
/// B ran — as a member cut off after its sink's ack records its last IDs
/// after the next owner started. B's next commit used to move B's position
/// past A's record, so no later restore of B read it, and after a restart a
/// duplicate of the replayed record was delivered a second time.
#[test]
fn a_record_another_store_wrote_to_the_changelog_is_restored_after_a_restart() {
    let root = tempfile::tempdir().expect("tempdir");
    let (a, b) = (root.path().join("a"), root.path().join("b"));
    let topic = unique_topic("cl-foreign-src");
    let changelog = unique_topic("cl-foreign-log");
    create_topic(&topic, 1);
    create_topic(&changelog, 1);
    let big = r#"{"id":"big","pad":"more than forty bytes of value"}"#;
    produce_raw(&topic, big.as_bytes(), None);
    produce_raw(&topic, br#"{"id":"a"}"#, None);
    let write = |dir: &Path, limit: usize| {
        std::fs::create_dir_all(dir).expect("store dir");
        json_changelog_config(dir, &topic, &changelog, limit)
    };
    let run = |dir: &Path, config: &Path| {
        TallyProcess::spawn_in(dir, &["run", "--config", config.to_str().unwrap()], &[])
    };
    let wait_restored = |tally: &mut TallyProcess| {
        wait_for("restored", Duration::from_secs(60), || {
            assert!(tally.is_running(), "{}", tail(&tally.stderr()));
            !restores(&tally.stderr()).is_empty()
        });
    };
    let (a_out, b_out) = (a.join("delivered.jsonl"), b.join("delivered.jsonl"));

    // A delivers "a" and dead-letters "big".
    let a_cfg = write(&a, 40);
    let log = run_until_delivered(&a, &a_cfg, &a_out, 1);
    assert!(log.contains("kept in dead letters"), "{}", tail(&log));

    // B takes the partition over; A replays its letter meanwhile.
    let b_cfg = write(&b, 1 << 20);
    let mut tally = run(&b, &b_cfg);
    wait_restored(&mut tally);
    write(&a, 1 << 20);
    replay_all(&a, &a_cfg);
    assert_eq!(count_lines(&a_out), 2, "A delivered the replayed record");
    // B delivers and records a new ID after A's record.
    produce_raw(&topic, br#"{"id":"c"}"#, None);
    wait_delivered(&mut tally, &b_out, 1);
    std::thread::sleep(Duration::from_millis(300));
    stop_cleanly(&mut tally);

    // Restarted, B restores what it has not applied — A's record included —
    // and skips a duplicate of the replayed record.
    let mut tally = run(&b, &b_cfg);
    wait_restored(&mut tally);
    produce_raw(&topic, big.as_bytes(), None);
    produce_raw(&topic, br#"{"id":"d"}"#, None);
    wait_delivered(&mut tally, &b_out, 2);
    std::thread::sleep(Duration::from_millis(300));
    let log = stop_cleanly(&mut tally);
    assert_eq!(
        delivered_keys(&b_out),
        ["c", "d"],
        "B delivered a replayed ID again:\n{}",
        tail(&log)
    );
    assert_eq!(
        restores(&log).iter().map(|(_, new)| new).sum::<u64>(),
        1,
        "B's restart restores A's record: {:?}\n{}",
        restores(&log),
        tail(&log)
    );
    // With no other writer, B's own commits move its position: the next
    // restart reads nothing.
    let mut tally = run(&b, &b_cfg);
    wait_restored(&mut tally);
    let log = stop_cleanly(&mut tally);
    assert_eq!(restores(&log), [(0, 0)], "{}", tail(&log));
}

/// `dlq replay` dedupes against what the letter's partition recorded in
/// the changelog, not only against its own store: store A dead-lettered
/// "big", store B took the partition over and delivered a re-sent "big";
/// A's replay used to deliver it a second time (A's store never saw B's
/// delivery — the usual case in group mode, where the member holding a
/// letter rarely still owns its partition).
#[test]
fn dlq_replay_skips_an_id_another_store_delivered_since() {
    let root = tempfile::tempdir().expect("tempdir");
    let (a, b) = (root.path().join("a"), root.path().join("b"));
    std::fs::create_dir_all(&a).expect("a");
    std::fs::create_dir_all(&b).expect("b");
    let topic = unique_topic("cl-replay-dup-src");
    let changelog = unique_topic("cl-replay-dup-log");
    create_topic(&topic, 1);
    create_topic(&changelog, 1);
    let big = r#"{"id":"big","pad":"more than forty bytes of value"}"#;
    produce_raw(&topic, big.as_bytes(), None);
    produce_raw(&topic, br#"{"id":"a"}"#, None);
    let (a_out, b_out) = (a.join("delivered.jsonl"), b.join("delivered.jsonl"));

    let a_cfg = json_changelog_config(&a, &topic, &changelog, 40);
    let log = run_until_delivered(&a, &a_cfg, &a_out, 1);
    assert!(log.contains("kept in dead letters"), "{}", tail(&log));
    // The producer sends "big" again; B, with the partition now, delivers it.
    produce_raw(&topic, big.as_bytes(), None);
    let b_cfg = json_changelog_config(&b, &topic, &changelog, 1 << 20);
    run_until_delivered(&b, &b_cfg, &b_out, 1);
    assert_eq!(delivered_keys(&b_out), ["big"]);

    // The config fix, written over a_cfg: "big" now fits.
    json_changelog_config(&a, &topic, &changelog, 1 << 20);
    let replayed = replay_all(&a, &a_cfg);
    assert!(
        replayed.contains("duplicate (already delivered)"),
        "{replayed}"
    );
    assert_eq!(
        delivered_keys(&a_out),
        ["a"],
        "the replay delivered big again"
    );
}

/// `group` config for `member` of a test group, with the changelog.
fn write_group_config(
    dir: &Path,
    double: &KillbillDouble,
    topic: &str,
    changelog: &str,
    group: &str,
) -> (PathBuf, Vec<(String, String)>) {
    std::fs::create_dir_all(dir).expect("member dir");
    write_config(
        dir,
        double,
        topic,
        changelog,
        &format!(
            "[assignment]\nmode = \"group\"\ngroup_id = {group:?}\nsession_timeout = \"6s\"\n\
             heartbeat_interval = \"1s\"\nrebalance_timeout = \"10s\"\n\
             offset_commit_interval = \"500ms\"\n[pipeline]\nmax_batch_records = 20\n"
        ),
    )
}

/// (generation, partitions) of a member's last "group assignment running".
fn last_assignment(log: &str) -> Option<(u64, u64)> {
    plain_log(log)
        .lines()
        .rev()
        .find(|l| l.contains("group assignment running"))
        .and_then(|l| Some((field(l, "generation")?, field(l, "partitions")?)))
}

/// Group mode: SIGKILL one member mid-stream. Its partitions move to the
/// other, which restores their IDs from the changelog before it fetches:
/// Kill Bill holds every record once, and duplicates of every tracking ID
/// delivered so far, produced after the move, cost **0 redundant posts** —
/// caught by the restored IDs, not by Kill Bill's own check.
#[test]
fn a_member_taking_over_restores_the_partitions_ids_and_posts_no_duplicate() {
    const PARTITIONS: u32 = 4;
    let root = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("cl-group");
    let changelog = unique_topic("cl-group-log");
    let group = unique_topic("cl-g");
    create_topic(&topic, PARTITIONS);
    create_topic(&changelog, PARTITIONS);
    let events = gen_usage(1500, 0.0, 2, 81);
    let later = gen_usage(200, 0.0, 2, 82);
    let double = KillbillDouble::with_tenants(&[T0, T1]);
    register(&double, &events);
    register(&double, &later);
    // Slow enough that the killed member is mid-stream.
    double.set_latency(Duration::from_millis(10));
    let (a_dir, b_dir) = (root.path().join("a"), root.path().join("b"));
    let (a_cfg, envs) = write_group_config(&a_dir, &double, &topic, &changelog, &group);
    let (b_cfg, _) = write_group_config(&b_dir, &double, &topic, &changelog, &group);
    let mut a = spawn(&a_dir, &a_cfg, &envs);
    let mut b = spawn(&b_dir, &b_cfg, &envs);
    wait_for(
        "both members share the partitions",
        Duration::from_secs(120),
        || {
            assert!(
                a.is_running() && b.is_running(),
                "{}\n{}",
                tail(&a.stderr()),
                tail(&b.stderr())
            );
            match (last_assignment(&a.stderr()), last_assignment(&b.stderr())) {
                (Some((ga, pa)), Some((gb, pb))) => ga == gb && pa > 0 && pb > 0 && pa + pb == 4,
                _ => false,
            }
        },
    );
    produce_jsonl(&topic, &events, Some("/trackingId"));
    wait_kill_bill_accepted(&double, &mut b, events.len() / 3, WAIT);
    a.kill();
    let a_log = plain_log(&a.stderr());
    let a_restores = restores(&a_log).len();
    wait_for("b owns every partition", Duration::from_secs(120), || {
        assert!(b.is_running(), "{}", tail(&b.stderr()));
        last_assignment(&b.stderr()).is_some_and(|(_, p)| p == PARTITIONS as u64)
    });
    let want = distinct_keys(&events);
    wait_kill_bill_accepted(&double, &mut b, want.len(), WAIT);
    let resent_by_the_kill = double.duplicate_posts();

    // Duplicates of every tracking ID delivered so far — most by the killed
    // member — then new events (on every partition), which mark the end.
    let dups = produce_jsonl(&topic, &events, Some("/trackingId"));
    let new = produce_jsonl(&topic, &later, Some("/trackingId"));
    assert_eq!(dups["count"], events.len());
    for p in 0..PARTITIONS {
        assert!(
            new["partitions"][p.to_string()].as_u64().unwrap_or(0) > 0,
            "no new event on partition {p}: {new}"
        );
    }
    let mut all = want.clone();
    all.extend(distinct_keys(&later));
    wait_kill_bill_accepted(&double, &mut b, all.len(), WAIT);
    std::thread::sleep(Duration::from_millis(500));
    let b_log = stop_cleanly(&mut b);

    assert_exactly_once(&double, &all);
    let redundant_after_the_move = double.duplicate_posts() - resent_by_the_kill;
    let b_restored: u64 = restores(&b_log).iter().map(|(_, new)| new).sum();
    eprintln!(
        "changelog takeover: events={} a_restores={a_restores} b_new_ids_from_the_changelog={b_restored} \
         resent_by_the_kill={resent_by_the_kill} duplicates_after_the_move={} redundant_posts_after_the_move={redundant_after_the_move}",
        events.len(),
        events.len()
    );
    assert_eq!(
        redundant_after_the_move, 0,
        "duplicates produced after the move reached Kill Bill"
    );
    assert!(
        b_restored > 0,
        "b restored nothing from the changelog:\n{}",
        tail(&b_log)
    );
    // What the kill re-sends: at most one unrecorded chunk per partition.
    assert!(
        resent_by_the_kill <= u64::from(PARTITIONS) * 20,
        "{resent_by_the_kill} re-sent by the kill"
    );
}
