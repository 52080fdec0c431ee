//! End to end: the real `tally` binary POSTing JSON events from the test
//! broker to an in-process HTTP receiver — envelope and headers, idempotency
//! keys, 4xx dead letters, 5xx/429 windows, 401 halts, repeated SIGKILLs,
//! and HTTPS with a custom CA and a client certificate (PKI made at test
//! time). The Kill Bill sink builds its client with the same code
//! (src/sink/http_client.rs), so mTLS is tested here once.
//! Needs scripts/test.sh (broker + Python tools).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::http_receiver::HttpReceiver;
use support::logs::{summary_field, tail};
use support::tls::{TestPki, TlsFront};
use support::*;

const EXIT_TIMEOUT: Duration = Duration::from_secs(45);

/// `count` events `{"id":"<prefix>-N","n":N,"amount":<decimal text>,...}`;
/// every `bad_every`-th carries `"bad":true` (the receiver rejects those).
fn events(prefix: &str, count: usize, bad_every: usize) -> Vec<String> {
    (0..count)
        .map(|n| {
            let bad = bad_every > 0 && n % bad_every == bad_every - 1;
            format!(
                r#"{{"id":"{prefix}-{n:05}","n":{n},"amount":{}.{:03}0,"bad":{bad},"note":"caf\u00e9 ü"}}"#,
                n % 97,
                n % 1000
            )
        })
        .collect()
}

fn id_of(line: &str) -> String {
    let v: Value = serde_json::from_str(line).expect("event");
    v["id"].as_str().expect("id").to_string()
}

/// `dir/tally.toml`: one json route over `topics`, sink http to `receiver`;
/// `sink_extra` goes inside `[sinks.http]`, `extra` at the end.
fn write_config(
    dir: &Path,
    receiver: &HttpReceiver,
    topics: &[&str],
    dedupe: &str,
    sink_extra: &str,
    extra: &str,
) -> PathBuf {
    write_config_url(dir, &receiver.url(), topics, dedupe, sink_extra, extra)
}

fn write_config_url(
    dir: &Path,
    url: &str,
    topics: &[&str],
    dedupe: &str,
    sink_extra: &str,
    extra: &str,
) -> PathBuf {
    let topics: Vec<String> = topics.iter().map(|t| format!("{t:?}")).collect();
    let text = format!(
        "[kafka]\nbrokers = [{:?}]\n[store]\npath = {:?}\n[assignment]\nmode = \"static\"\nmember = 0\nmembers = 1\n\
         \n[[routes]]\nname = \"hook\"\ntopics = [{}]\nformat = \"json\"\ndedupe = {dedupe:?}\nsink = \"http\"\nstart = \"earliest\"\n\
         \n[sinks.http]\nurl = {:?}\n{sink_extra}\n{extra}",
        broker(),
        dir.join("state").display().to_string(),
        topics.join(", "),
        url,
    );
    let path = dir.join("tally.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

fn spawn(dir: &Path, config: &Path, envs: &[(&str, &str)]) -> TallyProcess {
    TallyProcess::spawn_in(dir, &["run", "--config", config.to_str().unwrap()], envs)
}

fn wait_accepted(receiver: &HttpReceiver, tally: &mut TallyProcess, n: usize, timeout: Duration) {
    let ok = wait_until(timeout, || {
        assert!(
            tally.is_running(),
            "tally exited early:\n{}",
            tail(&tally.stderr())
        );
        receiver.accepted() >= n
    });
    assert!(
        ok,
        "receiver accepted {} of {n} keys after {timeout:?}; statuses {:?}\n{}",
        receiver.accepted(),
        receiver.statuses(),
        tail(&tally.stderr())
    );
}

/// SIGTERM, expect exit 0; returns the log.
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

fn assert_fully_committed(dir: &Path, config: &Path) {
    let out = TallyProcess::run(
        dir,
        &["offsets", "--config", config.to_str().unwrap(), "--json"],
        &[],
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "offsets: {}", out.stderr);
    for row in out.json().as_array().cloned().unwrap_or_default() {
        assert_eq!(row["lag"], 0, "partition not fully committed: {row}");
    }
}

/// Each accepted key was accepted once, except re-sends: every 2xx for a key
/// carried the same event. Returns (key → event text, re-sends).
fn accepted_events(receiver: &HttpReceiver, envelope: bool) -> (BTreeMap<String, String>, usize) {
    let mut out = BTreeMap::new();
    let mut resends = 0;
    for (key, hits) in receiver.accepted_by_key() {
        assert!(!key.is_empty(), "a request without Idempotency-Key");
        let events: BTreeSet<String> = hits
            .iter()
            .map(|r| {
                let text = String::from_utf8(r.body.to_vec()).expect("utf-8 body");
                if envelope {
                    event_of_envelope(&text)
                } else {
                    text
                }
            })
            .collect();
        assert_eq!(
            events.len(),
            1,
            "key {key} carried different events: {events:?}"
        );
        resends += hits.len() - 1;
        out.insert(key, events.into_iter().next().unwrap_or_default());
    }
    (out, resends)
}

/// The `event` member of an envelope, as the exact text it was embedded as.
fn event_of_envelope(text: &str) -> String {
    let v: Value = serde_json::from_str(text).expect("envelope is JSON");
    let obj = v.as_object().expect("envelope is an object");
    let keys: BTreeSet<&str> = obj.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from(["topic", "notifiedAt", "event"]),
        "{text}"
    );
    let at = v["notifiedAt"].as_str().expect("notifiedAt string");
    assert!(at.ends_with('Z'), "notifiedAt not UTC: {at}");
    chrono::DateTime::parse_from_rfc3339(at).expect("notifiedAt is RFC 3339");
    let start = text.find(",\"event\":").expect("event member") + ",\"event\":".len();
    text[start..text.len() - 1].to_string()
}

#[test]
fn delivers_envelopes_with_headers_and_keys_and_dead_letters_4xx() {
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("http-env");
    create_topic(&topic, 3);
    let mut lines = events("env", 400, 25);
    // Exact duplicates in Kafka: delivered once.
    let dups: Vec<String> = lines[..30].to_vec();
    let dups_good = dups.iter().filter(|l| !l.contains("\"bad\":true")).count();
    lines.extend(dups);
    let bad = lines.iter().filter(|l| l.contains("\"bad\":true")).count();
    let distinct: BTreeMap<String, String> = lines
        .iter()
        .filter(|l| !l.contains("\"bad\":true"))
        .map(|l| (id_of(l), l.clone()))
        .collect();
    produce_jsonl(&topic, &lines, Some("/id"));

    let receiver = HttpReceiver::start();
    receiver.require_header("authorization", "Bearer t0ken");
    receiver.judge(|body| {
        std::str::from_utf8(body)
            .ok()
            .filter(|t| t.contains("\"bad\":true"))
            .map(|_| 422)
    });
    // A short 503 window first: retried, nothing lost.
    receiver.status_for(503, Duration::from_millis(1500));
    let config = write_config(
        dir.path(),
        &receiver,
        &[&topic],
        "/id",
        "envelope = true\n[sinks.http.headers]\n\"X-Source\" = \"tally-e2e\"\n[sinks.http.headers_env]\nAuthorization = \"HOOK_AUTH\"\n",
        "",
    );
    let mut tally = spawn(dir.path(), &config, &[("HOOK_AUTH", "Bearer t0ken")]);
    wait_accepted(
        &receiver,
        &mut tally,
        distinct.len(),
        Duration::from_secs(60),
    );
    // Give the rejects time to be dead-lettered, then stop.
    wait_for("rejects answered", Duration::from_secs(30), || {
        receiver.statuses().get(&422).copied().unwrap_or(0) >= bad as u64
    });
    std::thread::sleep(Duration::from_millis(500));
    let stderr = stop(&mut tally);

    let (got, resends) = accepted_events(&receiver, true);
    assert_eq!(resends, 0, "no crash, so no re-sends");
    assert_eq!(got.len(), distinct.len());
    for (id, line) in &distinct {
        assert_eq!(got.get(id), Some(line), "event {id} not embedded verbatim");
    }
    for r in receiver.received().iter().filter(|r| r.status == 200) {
        assert_eq!(r.headers["content-type"], "application/json");
        assert_eq!(r.headers["x-source"], "tally-e2e");
        assert_eq!(r.headers["x-tally-topic"], topic);
        let v: Value = serde_json::from_slice(&r.body).expect("json");
        assert_eq!(v["topic"], topic.as_str());
    }
    let statuses = receiver.statuses();
    assert!(statuses.get(&503).copied().unwrap_or(0) > 0, "{statuses:?}");
    assert_eq!(
        statuses.get(&422).copied(),
        Some(bad as u64),
        "{statuses:?}"
    );
    assert_eq!(
        summary_field(&stderr, "dead_lettered"),
        bad as u64,
        "{}",
        tail(&stderr)
    );
    // Dead-lettered records are not "delivered", so a duplicate of one is judged again.
    let good_dups = dups_good as u64;
    assert_eq!(summary_field(&stderr, "duplicates"), good_dups);
    assert_fully_committed(dir.path(), &config);

    // The dead letters say why.
    let out = TallyProcess::run(
        dir.path(),
        &["dlq", "list", "--config", config.to_str().unwrap()],
        &[],
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "dlq list: {}", out.stderr);
    assert!(out.stdout.contains("422"), "{}", out.stdout);

    // A second run sends nothing new.
    let before = receiver.requests();
    let mut again = spawn(dir.path(), &config, &[("HOOK_AUTH", "Bearer t0ken")]);
    std::thread::sleep(Duration::from_secs(2));
    stop(&mut again);
    assert_eq!(
        receiver.requests(),
        before,
        "restart re-sent committed records"
    );
    eprintln!(
        "envelope: delivered={} bad={bad} statuses={statuses:?}",
        distinct.len()
    );
}

#[test]
fn bare_events_without_dedupe_key_survive_5xx_429_and_401_windows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("http-bare");
    create_topic(&topic, 2);
    let lines = events("bare", 600, 0);
    produce_jsonl(&topic, &lines, Some("/id"));
    let receiver = HttpReceiver::start();
    receiver.set_latency(Duration::from_millis(2));
    let config = write_config(
        dir.path(),
        &receiver,
        &[&topic],
        "none",
        "max_in_flight = 8\nrequest_timeout = \"2s\"\n",
        "\n[pipeline]\nmax_batch_records = 50\nretry_initial = \"50ms\"\nretry_max = \"500ms\"\n",
    );
    let t0 = Instant::now();
    let mut tally = spawn(dir.path(), &config, &[]);
    wait_accepted(&receiver, &mut tally, 100, Duration::from_secs(60));
    receiver.status_for(500, Duration::from_secs(1));
    std::thread::sleep(Duration::from_millis(1200));
    receiver.status_next(20, 429);
    std::thread::sleep(Duration::from_millis(300));
    // Credentials rejected for a while: halt (not dead-letter), then resume.
    receiver.status_for(401, Duration::from_secs(2));
    wait_accepted(&receiver, &mut tally, lines.len(), Duration::from_secs(90));
    std::thread::sleep(Duration::from_millis(500));
    let stderr = stop(&mut tally);
    assert_eq!(
        summary_field(&stderr, "dead_lettered"),
        0,
        "{}",
        tail(&stderr)
    );

    let (got, resends) = accepted_events(&receiver, false);
    assert_eq!(resends, 0);
    // Keys are the Kafka coordinates, unique; bodies are the events verbatim.
    let want: BTreeSet<&str> = lines.iter().map(String::as_str).collect();
    let bodies: BTreeSet<&str> = got.values().map(String::as_str).collect();
    assert_eq!(bodies, want);
    for key in got.keys() {
        let parts: Vec<&str> = key.rsplitn(3, '/').collect();
        assert_eq!(parts.len(), 3, "{key}");
        assert_eq!(parts[2], topic, "{key}");
        parts[0].parse::<i64>().expect("offset");
        parts[1].parse::<i32>().expect("partition");
    }
    assert_fully_committed(dir.path(), &config);
    eprintln!(
        "bare: {} records in {:?}, statuses {:?}",
        lines.len(),
        t0.elapsed(),
        receiver.statuses()
    );
}

#[test]
fn sigkill_while_delivering_every_record_arrives_resends_keep_their_key() {
    const EVENTS: usize = 8_000;
    const KILLS: usize = 5;
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("http-crash");
    create_topic(&topic, 4);
    let lines = events("crash", EVENTS, 0);
    produce_jsonl(&topic, &lines, Some("/id"));
    let receiver = HttpReceiver::start();
    receiver.set_latency(Duration::from_millis(1));
    let config = write_config(
        dir.path(),
        &receiver,
        &[&topic],
        "/id",
        "max_in_flight = 32\n",
        "\n[pipeline]\nmax_batch_records = 64\nprefetch_batches = 1\n",
    );
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(7);
    let mut rng = fastrand::Rng::with_seed(seed);
    eprintln!("http crash test seed {seed}");
    let mut mid_stream = 0;
    for k in 1..=KILLS {
        let mut tally = spawn(dir.path(), &config, &[]);
        wait_accepted(
            &receiver,
            &mut tally,
            EVENTS * k / (KILLS + 2),
            Duration::from_secs(60),
        );
        std::thread::sleep(Duration::from_millis(rng.u64(0..40)));
        tally.kill();
        if receiver.accepted() < EVENTS {
            mid_stream += 1;
        }
    }
    let mut tally = spawn(dir.path(), &config, &[]);
    wait_accepted(&receiver, &mut tally, EVENTS, Duration::from_secs(120));
    std::thread::sleep(Duration::from_millis(500));
    stop(&mut tally);

    // Every record arrived; a key seen twice always carried the same event.
    let (got, resends) = accepted_events(&receiver, false);
    let want: BTreeMap<String, String> = lines.iter().map(|l| (id_of(l), l.clone())).collect();
    assert_eq!(got, want);
    assert!(mid_stream >= 4, "only {mid_stream} kills mid-stream");
    assert_fully_committed(dir.path(), &config);
    eprintln!(
        "http crash test: events={EVENTS} kills_mid_stream={mid_stream} resends_same_key={resends} requests={}",
        receiver.requests()
    );
}

/// `[sinks.http]` TLS lines: our CA, and a client cert + key if given.
fn tls_lines(pki: &TestPki, client: Option<(&Path, &Path)>) -> String {
    let mut s = format!("ca_file = {:?}\n", pki.ca.display().to_string());
    if let Some((cert, key)) = client {
        s += &format!(
            "cert_file = {:?}\nkey_file = {:?}\n",
            cert.display().to_string(),
            key.display().to_string()
        );
    }
    s
}

#[test]
fn https_with_custom_ca_and_client_cert_delivers_each_record_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = TestPki::generate(dir.path());
    let topic = unique_topic("https");
    create_topic(&topic, 2);
    let lines = events("tls", 300, 0);
    produce_jsonl(&topic, &lines, Some("/id"));
    let receiver = HttpReceiver::start();
    let front = TlsFront::start(receiver.runtime(), receiver.router(), pki.server_config());
    let config = write_config_url(
        dir.path(),
        &front.url(),
        &[&topic],
        "/id",
        &tls_lines(&pki, Some((&pki.client_cert, &pki.client_key))),
        "",
    );
    let mut tally = spawn(dir.path(), &config, &[]);
    wait_accepted(&receiver, &mut tally, lines.len(), Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(500));
    let stderr = stop(&mut tally);
    let (got, resends) = accepted_events(&receiver, false);
    assert_eq!(resends, 0, "delivered exactly once");
    let want: BTreeMap<String, String> = lines.iter().map(|l| (id_of(l), l.clone())).collect();
    assert_eq!(got, want);
    assert_eq!(summary_field(&stderr, "dead_lettered"), 0);
    assert!(front.handshakes_ok() >= 1);
    assert_eq!(front.handshakes_failed(), 0);
    assert_fully_committed(dir.path(), &config);
}

#[test]
fn https_refuses_clearly_without_a_client_cert_or_with_one_from_another_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = TestPki::generate(dir.path());
    let topic = unique_topic("https-refused");
    create_topic(&topic, 1);
    let lines = events("no", 20, 0);
    produce_jsonl(&topic, &lines, Some("/id"));
    let receiver = HttpReceiver::start();
    let front = TlsFront::start(receiver.runtime(), receiver.router(), pki.server_config());
    let retry = "\n[pipeline]\nretry_initial = \"100ms\"\nretry_max = \"500ms\"\n";
    // (case, client cert + key, the server's alert tally must report)
    type Case<'a> = (&'a str, Option<(&'a Path, &'a Path)>, &'a str);
    let cases: [Case; 2] = [
        ("no client cert", None, "CertificateRequired"),
        (
            "client cert from another CA",
            Some((&pki.stranger_cert, &pki.stranger_key)),
            "UnknownCA",
        ),
    ];
    for (case, client, alert) in cases {
        let run = dir.path().join(case.replace(' ', "-"));
        std::fs::create_dir_all(&run).expect("run dir");
        let config = write_config_url(
            &run,
            &front.url(),
            &[&topic],
            "/id",
            &tls_lines(&pki, client),
            retry,
        );
        let failed_before = front.handshakes_failed();
        let mut tally = spawn(&run, &config, &[]);
        // The server refuses the handshake; tally halts the partition with a
        // TLS error (never dead-letters, never skips) and says so.
        let said = wait_until(Duration::from_secs(60), || {
            assert!(tally.is_running(), "{case}: {}", tail(&tally.stderr()));
            let err = tally.stderr();
            err.contains("route halted") && err.contains(alert)
        });
        assert!(
            said,
            "{case}: no TLS error logged:\n{}",
            tail(&tally.stderr())
        );
        assert!(front.handshakes_failed() > failed_before, "{case}");
        let stderr = stop(&mut tally);
        assert!(
            stderr.contains("class=\"halt\""),
            "{case}: {}",
            tail(&stderr)
        );
        assert_eq!(receiver.accepted(), 0, "{case}: something got through");
        assert_eq!(summary_field(&stderr, "dead_lettered"), 0, "{case}");
        assert_eq!(summary_field(&stderr, "delivered"), 0, "{case}");
    }
    // A client key file that is not there: refused at startup, naming it.
    let run = dir.path().join("missing-key");
    std::fs::create_dir_all(&run).expect("run dir");
    let missing = run.join("nowhere.key");
    let config = write_config_url(
        &run,
        &front.url(),
        &[&topic],
        "/id",
        &tls_lines(&pki, Some((&pki.client_cert, &missing))),
        "",
    );
    let out = TallyProcess::run(
        &run,
        &["run", "--config", config.to_str().unwrap()],
        &[],
        Duration::from_secs(60),
    );
    assert!(!out.status.success(), "started without its key file");
    assert!(
        out.stderr.contains("nowhere.key"),
        "error does not name the file:\n{}",
        out.stderr
    );
}

#[test]
fn check_connect_probes_the_endpoint_over_https_without_sending_an_event() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = TestPki::generate(dir.path());
    let receiver = HttpReceiver::start();
    let front = TlsFront::start(receiver.runtime(), receiver.router(), pki.server_config());
    let topic = unique_topic("http-check");
    create_topic(&topic, 1);
    let probe = |client: Option<(&Path, &Path)>| {
        let config = write_config_url(
            dir.path(),
            &front.url(),
            &[&topic],
            "/id",
            &tls_lines(&pki, client),
            "",
        );
        let out = TallyProcess::check_connect(dir.path(), &config, &[]);
        (out.status.success(), out.sink_line("http"))
    };
    let (ok, line) = probe(Some((&pki.client_cert, &pki.client_key)));
    assert!(
        ok && line.contains("ok (") && line.contains("answered HEAD"),
        "{line}"
    );
    let (ok, line) = probe(None);
    assert!(!ok && line.contains("FAILED"), "{line}");
    let (ok, line) = probe(Some((&pki.stranger_cert, &pki.stranger_key)));
    assert!(!ok && line.contains("FAILED"), "{line}");
    assert_eq!(
        receiver.accepted(),
        0,
        "the probe must not deliver anything"
    );
}
