//! End to end: the real `tally` binary forwarding JSON events from the test
//! broker to a real RabbitMQ (scripts/rabbitmq.sh), checked with an
//! independent client (Python pika): envelope, message_id, properties, order
//! within a partition, topic → exchange mapping, unroutable policies, a
//! deleted exchange (channel loss, redeclare), repeated SIGKILLs and a
//! RabbitMQ restart mid-stream (on a node of that test's own).
//! Needs scripts/test.sh (Kafka broker, RabbitMQ, Python tools).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::amqp::{
    AmqpMessage, RabbitNode, amqp_url, count_at, delete_exchange, drain, drain_at, setup_queue,
    setup_queue_at,
};
use support::logs::{summary_field, tail};
use support::*;

const EXIT_TIMEOUT: Duration = Duration::from_secs(45);

fn events(prefix: &str, count: usize) -> Vec<String> {
    (0..count)
        .map(|n| {
            format!(
                r#"{{"eventId":"{prefix}-{n:05}","n":{n},"claimId":{},"amount":{}.{:03}0,"note":"caf\u00e9 ü"}}"#,
                n % 13,
                n % 97,
                n % 1000
            )
        })
        .collect()
}

fn id_of(line: &str) -> String {
    let v: Value = serde_json::from_str(line).expect("event");
    v["eventId"].as_str().expect("eventId").to_string()
}

/// `dir/tally.toml`: one json route over the topics of `exchanges`, sink amqp.
fn write_config(dir: &Path, exchanges: &[(&str, &str)], sink_extra: &str, extra: &str) -> PathBuf {
    let topics: Vec<String> = exchanges.iter().map(|(t, _)| format!("{t:?}")).collect();
    let map: String = exchanges
        .iter()
        .map(|(t, e)| format!("{t:?} = {e:?}\n"))
        .collect();
    let text = format!(
        "[kafka]\nbrokers = [{:?}]\n[store]\npath = {:?}\n[assignment]\nmode = \"static\"\nmember = 0\nmembers = 1\n\
         \n[[routes]]\nname = \"forward\"\ntopics = [{}]\nformat = \"json\"\ndedupe = \"/eventId\"\nsink = \"amqp\"\nstart = \"earliest\"\n\
         \n[sinks.amqp]\nurl_env = \"TEST_AMQP_URL\"\n{sink_extra}\n[sinks.amqp.exchanges]\n{map}\n{extra}",
        broker(),
        dir.join("state").display().to_string(),
        topics.join(", "),
    );
    let path = dir.join("tally.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

fn spawn(dir: &Path, config: &Path) -> TallyProcess {
    spawn_at(dir, config, &amqp_url())
}

fn spawn_at(dir: &Path, config: &Path, url: &str) -> TallyProcess {
    TallyProcess::spawn_in(
        dir,
        &["run", "--config", config.to_str().unwrap()],
        &[("TEST_AMQP_URL", url)],
    )
}

fn stop(tally: &mut TallyProcess) -> String {
    let status = tally.terminate_and_wait(EXIT_TIMEOUT);
    let stderr = tally.stderr();
    assert!(
        status.success(),
        "tally exit {status:?}:\n{}",
        tail(&stderr)
    );
    stderr
}

fn offsets(dir: &Path, config: &Path) -> Vec<Value> {
    let out = TallyProcess::run(
        dir,
        &["offsets", "--config", config.to_str().unwrap(), "--json"],
        &[],
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "offsets: {}", out.stderr);
    out.json().as_array().cloned().unwrap_or_default()
}

fn assert_fully_committed(dir: &Path, config: &Path) {
    for row in offsets(dir, config) {
        assert_eq!(row["lag"], 0, "partition not fully committed: {row}");
    }
}

/// Drains `queue` into `got` until it holds `n` distinct message ids.
fn collect(
    queue: &str,
    got: &mut Vec<AmqpMessage>,
    n: usize,
    tally: &mut TallyProcess,
    timeout: Duration,
) {
    let ok = wait_until(timeout, || {
        assert!(
            tally.is_running(),
            "tally exited early:\n{}",
            tail(&tally.stderr())
        );
        got.extend(drain(queue));
        distinct_ids(got) >= n
    });
    assert!(
        ok,
        "{} of {n} messages after {timeout:?}\n{}",
        distinct_ids(got),
        tail(&tally.stderr())
    );
}

fn distinct_ids(got: &[AmqpMessage]) -> usize {
    got.iter()
        .filter_map(|m| m.message_id.as_deref())
        .collect::<BTreeSet<_>>()
        .len()
}

/// The envelope's members; `event` as the exact text it was embedded as.
fn open_envelope(m: &AmqpMessage) -> (String, String) {
    let v: Value = serde_json::from_str(&m.body).expect("envelope is JSON");
    let keys: BTreeSet<&str> = v
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from(["topic", "notifiedAt", "event"]),
        "{}",
        m.body
    );
    let at = v["notifiedAt"].as_str().expect("notifiedAt");
    assert!(at.ends_with('Z'), "{at}");
    chrono::DateTime::parse_from_rfc3339(at).expect("RFC 3339");
    let start = m.body.find(",\"event\":").expect("event") + ",\"event\":".len();
    (
        v["topic"].as_str().expect("topic").to_string(),
        m.body[start..m.body.len() - 1].to_string(),
    )
}

/// Per message_id: one event (re-sends identical); order of first
/// appearances by offset within each partition. Returns id → event, re-sends.
fn check_messages(
    got: &[AmqpMessage],
    topic: &str,
    exchange: &str,
) -> (BTreeMap<String, String>, usize) {
    let mut by_id: BTreeMap<String, String> = BTreeMap::new();
    let mut resends = 0;
    let mut last_offset: BTreeMap<i64, i64> = BTreeMap::new();
    for m in got {
        assert_eq!(m.exchange, exchange);
        assert_eq!(m.routing_key, topic);
        assert_eq!(m.content_type.as_deref(), Some("application/json"));
        assert_eq!(m.delivery_mode, Some(2), "not persistent");
        assert_eq!(m.app_id.as_deref(), Some("tally"));
        let (t, event) = open_envelope(m);
        assert_eq!(t, topic);
        let id = m.message_id.clone().expect("message_id");
        assert_eq!(id, id_of(&event), "message_id is the dedupe key");
        let partition = m.headers["x-tally-partition"]
            .as_i64()
            .expect("partition header");
        let offset = m.headers["x-tally-offset"].as_i64().expect("offset header");
        if let Some(prev) = by_id.insert(id.clone(), event.clone()) {
            assert_eq!(prev, event, "{id} re-sent with a different event");
            resends += 1;
        } else {
            let last = last_offset.entry(partition).or_insert(-1);
            assert!(
                offset > *last,
                "partition {partition}: offset {offset} after {last}"
            );
            *last = offset;
        }
    }
    (by_id, resends)
}

#[test]
fn forwards_each_topic_to_its_exchange_as_envelopes_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (unique_topic("amqp-a"), unique_topic("amqp-b"));
    let (xa, xb) = (format!("{a}-x"), format!("{b}-x"));
    let (qa, qb) = (format!("{a}-q"), format!("{b}-q"));
    create_topic(&a, 3);
    create_topic(&b, 1);
    setup_queue(&xa, "topic", &qa);
    setup_queue(&xb, "topic", &qb);
    let mut la = events("a", 500);
    la.extend(la[..40].to_vec()); // exact duplicates in Kafka: forwarded once
    let lb = events("b", 120);
    produce_jsonl(&a, &la, Some("/eventId"));
    produce_jsonl(&b, &lb, Some("/eventId"));
    let config = write_config(dir.path(), &[(&a, &xa), (&b, &xb)], "", "");
    let mut tally = spawn(dir.path(), &config);
    let (mut ga, mut gb) = (Vec::new(), Vec::new());
    collect(&qa, &mut ga, 500, &mut tally, Duration::from_secs(60));
    collect(&qb, &mut gb, 120, &mut tally, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500));
    let stderr = stop(&mut tally);
    ga.extend(drain(&qa));
    gb.extend(drain(&qb));

    let (ea, ra) = check_messages(&ga, &a, &xa);
    let (eb, rb) = check_messages(&gb, &b, &xb);
    assert_eq!((ra, rb), (0, 0), "no crash, no re-sends");
    let want_a: BTreeMap<String, String> = la.iter().map(|l| (id_of(l), l.clone())).collect();
    let want_b: BTreeMap<String, String> = lb.iter().map(|l| (id_of(l), l.clone())).collect();
    assert_eq!(ea, want_a, "events embedded verbatim");
    assert_eq!(eb, want_b);
    assert_eq!(summary_field(&stderr, "duplicates"), 40);
    assert_eq!(summary_field(&stderr, "dead_lettered"), 0);
    assert_fully_committed(dir.path(), &config);
}

#[test]
fn unroutable_waits_for_a_queue_by_default_and_survives_a_deleted_exchange() {
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("amqp-unroutable");
    let (x, q) = (format!("{topic}-x"), format!("{topic}-q"));
    create_topic(&topic, 2);
    let lines = events("u", 200);
    produce_jsonl(&topic, &lines, Some("/eventId"));
    let config = write_config(
        dir.path(),
        &[(&topic, &x)],
        "",
        "\n[pipeline]\nretry_initial = \"50ms\"\nretry_max = \"500ms\"\n",
    );
    let mut tally = spawn(dir.path(), &config);
    // No queue is bound: every publish comes back; nothing may be committed.
    std::thread::sleep(Duration::from_secs(3));
    assert!(tally.is_running(), "{}", tail(&tally.stderr()));
    // Bind a queue to the exchange tally declared: everything arrives.
    setup_queue(&x, "topic", &q);
    let mut got = Vec::new();
    collect(&q, &mut got, 100, &mut tally, Duration::from_secs(60));
    // Delete the exchange under tally: its channel closes; it reconnects,
    // redeclares, and (queue binding gone) waits again until we rebind.
    delete_exchange(&x);
    produce_jsonl(&topic, &events("u2", 100), Some("/eventId"));
    std::thread::sleep(Duration::from_secs(2));
    setup_queue(&x, "topic", &q);
    collect(&q, &mut got, 300, &mut tally, Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(500));
    let stderr = stop(&mut tally);
    got.extend(drain(&q));
    let (ids, resends) = check_messages(&got, &topic, &x);
    assert_eq!(ids.len(), 300);
    assert_eq!(summary_field(&stderr, "dead_lettered"), 0);
    assert_fully_committed(dir.path(), &config);
    eprintln!("unroutable/deleted exchange: 300 delivered, {resends} re-sends");
}

#[test]
fn unroutable_is_dead_lettered_when_configured() {
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("amqp-dl");
    create_topic(&topic, 1);
    let lines = events("d", 25);
    produce_jsonl(&topic, &lines, Some("/eventId"));
    let x = format!("{topic}-x");
    let config = write_config(
        dir.path(),
        &[(&topic, &x)],
        "exchange_type = \"fanout\"\non_unroutable = \"dead-letter\"\n",
        "",
    );
    let mut tally = spawn(dir.path(), &config);
    // (`tally offsets` needs the store lock: check after the run.)
    std::thread::sleep(Duration::from_secs(4));
    let stderr = stop(&mut tally);
    assert_eq!(
        summary_field(&stderr, "dead_lettered"),
        25,
        "{}",
        tail(&stderr)
    );
    assert_fully_committed(dir.path(), &config);
}

#[test]
fn sigkill_while_forwarding_every_event_arrives_resends_keep_message_id() {
    const EVENTS: usize = 20_000;
    const KILLS: usize = 5;
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("amqp-crash");
    let (x, q) = (format!("{topic}-x"), format!("{topic}-q"));
    create_topic(&topic, 4);
    setup_queue(&x, "topic", &q);
    let lines = events("c", EVENTS);
    produce_jsonl(&topic, &lines, Some("/eventId"));
    let config = write_config(
        dir.path(),
        &[(&topic, &x)],
        "",
        "\n[pipeline]\nmax_batch_records = 64\nprefetch_batches = 1\n",
    );
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(7);
    let mut rng = fastrand::Rng::with_seed(seed);
    eprintln!("amqp crash test seed {seed}");
    let mut got = Vec::new();
    let mut mid_stream = 0;
    for k in 1..=KILLS {
        // Kill by time: forwarding is faster than draining the queue.
        let mut tally = spawn(dir.path(), &config);
        std::thread::sleep(Duration::from_millis(rng.u64(250..900)));
        assert!(tally.is_running(), "{}", tail(&tally.stderr()));
        tally.kill();
        got.extend(drain(&q));
        eprintln!("kill {k}: {} distinct so far", distinct_ids(&got));
        if distinct_ids(&got) < EVENTS {
            mid_stream += 1;
        }
    }
    let t0 = Instant::now();
    let mut tally = spawn(dir.path(), &config);
    collect(&q, &mut got, EVENTS, &mut tally, Duration::from_secs(120));
    std::thread::sleep(Duration::from_millis(500));
    stop(&mut tally);
    got.extend(drain(&q));
    let (ids, resends) = check_messages(&got, &topic, &x);
    let want: BTreeMap<String, String> = lines.iter().map(|l| (id_of(l), l.clone())).collect();
    assert_eq!(ids, want);
    assert!(mid_stream >= 4, "only {mid_stream} kills mid-stream");
    assert_fully_committed(dir.path(), &config);
    eprintln!(
        "amqp crash test: events={EVENTS} kills_mid_stream={mid_stream} messages={} resends_same_message_id={resends} final_run={:?}",
        got.len(),
        t0.elapsed()
    );
}

#[test]
fn rabbitmq_restart_mid_stream_every_event_arrives_resends_keep_message_id() {
    const EVENTS: usize = 20_000;
    // A node of its own: stopping the shared one would break the other tests.
    let node = RabbitNode::start(&format!("restart-{}", std::process::id()));
    let url = node.url().to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("amqp-restart");
    let (x, q) = (format!("{topic}-x"), format!("{topic}-q"));
    create_topic(&topic, 4);
    setup_queue_at(&url, &x, "topic", &q);
    let lines = events("r", EVENTS);
    produce_jsonl(&topic, &lines, Some("/eventId"));
    let config = write_config(
        dir.path(),
        &[(&topic, &x)],
        // A publish whose connection was reset can wait for its confirm
        // until confirm_timeout (30 s by default): keep that well inside
        // the wait below, which starts only once the node's stop returned.
        "confirm_timeout = \"5s\"\n",
        "\n[pipeline]\nmax_batch_records = 64\nprefetch_batches = 1\nretry_initial = \"100ms\"\nretry_max = \"1s\"\n",
    );
    let mut tally = spawn_at(dir.path(), &config, &url);
    // Stop the node as soon as messages arrive (counting, not draining: a
    // drain would chase the stream until tally is done).
    let mut before_stop = 0;
    let ok = wait_until(Duration::from_secs(60), || {
        assert!(tally.is_running(), "{}", tail(&tally.stderr()));
        before_stop = count_at(&url, &q);
        before_stop > 0
    });
    assert!(ok, "nothing forwarded:\n{}", tail(&tally.stderr()));
    let log_before = tally.stderr().len();
    let down = Instant::now();
    let stop_took = node.stop();
    // tally notices while the node is down and keeps running (transient).
    let noticed = wait_until(Duration::from_secs(60), || {
        let err = tally.stderr();
        err[log_before.min(err.len())..].contains("amqp")
    });
    assert!(noticed, "no amqp warning:\n{}", tail(&tally.stderr()));
    assert!(tally.is_running(), "{}", tail(&tally.stderr()));
    let resume_took = node.resume();
    let down_for = down.elapsed();
    let t0 = Instant::now();
    let mut got = Vec::new();
    let ok = wait_until(Duration::from_secs(120), || {
        assert!(tally.is_running(), "{}", tail(&tally.stderr()));
        got.extend(drain_at(&url, &q));
        distinct_ids(&got) >= EVENTS
    });
    assert!(
        ok,
        "{} of {EVENTS} after the restart\n{}",
        distinct_ids(&got),
        tail(&tally.stderr())
    );
    let after_restart = t0.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let stderr = stop(&mut tally);
    got.extend(drain_at(&url, &q));
    let (ids, resends) = check_messages(&got, &topic, &x);
    let want: BTreeMap<String, String> = lines.iter().map(|l| (id_of(l), l.clone())).collect();
    assert_eq!(ids, want, "every event arrives, with its own message_id");
    assert!(
        (before_stop as usize) < EVENTS,
        "the restart came after everything was forwarded"
    );
    assert!(stderr.contains("reconnecting"), "{}", tail(&stderr));
    assert_eq!(summary_field(&stderr, "dead_lettered"), 0);
    assert_fully_committed(dir.path(), &config);
    eprintln!(
        "amqp restart test: events={EVENTS} queued_before_stop={before_stop} stop_took={stop_took:?} \
         resume_took={resume_took:?} down_for={down_for:?} messages={} resends_same_message_id={resends} \
         drained_all_after_restart_in={after_restart:?}",
        got.len()
    );
}

fn check_connect(dir: &Path, config: &Path, url: &str) -> TallyOutput {
    TallyProcess::check_connect(dir, config, &[("TEST_AMQP_URL", url)])
}

#[test]
fn check_connect_probes_the_broker_and_its_exchanges() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (unique_topic("amqp-check-a"), unique_topic("amqp-check-b"));
    let (xa, xb) = (format!("{a}-x"), format!("{b}-x"));
    create_topic(&a, 1);
    create_topic(&b, 1);
    setup_queue(&xa, "topic", &format!("{a}-q"));
    // xa exists, xb does not: fine, tally declares it at startup.
    let config = write_config(dir.path(), &[(&a, &xa), (&b, &xb)], "", "");
    let out = check_connect(dir.path(), &config, &amqp_url());
    assert!(out.status.success(), "{}\n{}", out.stdout, out.stderr);
    let line = out.sink_line("amqp");
    assert!(line.contains(": ok (connected"), "{line}");
    assert!(line.contains(&format!("present: [{xa}]")), "{line}");
    assert!(
        line.contains(&format!("missing: [{xb}], declared at startup")),
        "{line}"
    );
    // The probe creates nothing.
    let out = check_connect(dir.path(), &config, &amqp_url());
    assert!(
        out.stdout.contains(&format!("missing: [{xb}]")),
        "{}",
        out.stdout
    );

    // declare = false: a missing exchange is a problem.
    let strict = write_config(dir.path(), &[(&a, &xa), (&b, &xb)], "declare = false\n", "");
    let out = check_connect(dir.path(), &strict, &amqp_url());
    assert!(!out.status.success(), "{}", out.stdout);
    assert!(
        out.stdout.contains(&format!(
            "FAILED (connected, but exchanges missing and declare = false: [{xb}])"
        )),
        "{}",
        out.stdout
    );

    // Nothing listening: a failure that says what failed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let out = check_connect(
        dir.path(),
        &config,
        &format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
    );
    assert!(!out.status.success(), "{}", out.stdout);
    let line = out.sink_line("amqp");
    assert!(line.contains("FAILED (amqp sink: connect:"), "{line}");
    assert!(!line.contains("guest:guest"), "credentials printed: {line}");
    eprintln!("{line}");
}

#[test]
fn amqps_with_a_client_certificate_delivers_once_and_without_one_is_refused() {
    const EVENTS: usize = 300;
    // A node of its own with a TLS listener that requires client certificates.
    let pki_dir = tempfile::tempdir().expect("tempdir");
    let pki = support::tls::TestPki::generate(pki_dir.path());
    let node = RabbitNode::start_tls(&format!("tls-{}", std::process::id()), pki_dir.path());
    let (plain, amqps) = (node.url().to_string(), node.amqps_url().to_string());
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("amqps");
    let (x, q) = (format!("{topic}-x"), format!("{topic}-q"));
    create_topic(&topic, 2);
    setup_queue_at(&plain, &x, "topic", &q);
    let lines = events("s", EVENTS);
    produce_jsonl(&topic, &lines, Some("/eventId"));
    let tls = |identity: Option<(&PathBuf, &PathBuf)>| {
        let mut s = format!("ca_file = {:?}\n", pki.ca);
        if let Some((cert, key)) = identity {
            s += &format!("cert_file = {cert:?}\nkey_file = {key:?}\n");
        }
        s
    };

    // Refused without a client certificate and with one from another CA:
    // `check --connect` names the failure instead of hanging or retrying.
    for (what, identity) in [
        ("no client certificate", None),
        (
            "another CA's certificate",
            Some((&pki.stranger_cert, &pki.stranger_key)),
        ),
    ] {
        let config = write_config(dir.path(), &[(&topic, &x)], &tls(identity), "");
        let out = check_connect(dir.path(), &config, &amqps);
        let line = out.sink_line("amqp");
        assert!(!out.status.success(), "{what}: accepted: {line}");
        assert!(line.contains("FAILED"), "{what}: {line}");
        assert!(!line.contains("guest:guest"), "credentials printed: {line}");
        eprintln!("amqps {what}: {line}");
    }

    // Accepted with ours: every event forwarded over AMQPS, once per message_id.
    let config = write_config(
        dir.path(),
        &[(&topic, &x)],
        &tls(Some((&pki.client_cert, &pki.client_key))),
        "",
    );
    let out = check_connect(dir.path(), &config, &amqps);
    assert!(out.status.success(), "{}", out.stdout);
    let mut tally = spawn_at(dir.path(), &config, &amqps);
    let mut got = Vec::new();
    let ok = wait_until(Duration::from_secs(90), || {
        assert!(tally.is_running(), "{}", tail(&tally.stderr()));
        got.extend(drain_at(&plain, &q));
        distinct_ids(&got) >= EVENTS
    });
    assert!(
        ok,
        "{} of {EVENTS}\n{}",
        distinct_ids(&got),
        tail(&tally.stderr())
    );
    std::thread::sleep(Duration::from_millis(500));
    stop(&mut tally);
    got.extend(drain_at(&plain, &q));
    let (ids, resends) = check_messages(&got, &topic, &x);
    let want: BTreeMap<String, String> = lines.iter().map(|l| (id_of(l), l.clone())).collect();
    assert_eq!(ids, want);
    assert_eq!(resends, 0, "no faults, so no re-sends");
    assert_fully_committed(dir.path(), &config);
}
