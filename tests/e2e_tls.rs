//! TLS and mutual TLS to Kafka, end to end: the `tally` binary against a
//! real Tansu behind a real `stunnel4` terminator (tests/support/tls_rig.rs).
//!
//! Needs scripts/test.sh (stunnel4, TALLY_TANSU_BIN).

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::tls_rig::{RigOptions, TestCa, TlsRig};
use support::{TallyProcess, count_lines, unique_topic, wait_for, write_file_sink_config};

const RUN_TIMEOUT: Duration = Duration::from_secs(60);

fn tls_table(ca: Option<&Path>, identity: Option<(&Path, &Path)>) -> String {
    let mut t = String::from("\n[kafka.tls]\n");
    if let Some(ca) = ca {
        t.push_str(&format!("ca_file = {:?}\n", ca.display().to_string()));
    }
    if let Some((c, k)) = identity {
        t.push_str(&format!(
            "cert_file = {:?}\nkey_file = {:?}\n",
            c.display().to_string(),
            k.display().to_string()
        ));
    }
    t
}

fn config(rig: &TlsRig, topic: &str, tls: &str) -> PathBuf {
    write_file_sink_config(rig.dir.path(), &[topic], "json", "dedupe = \"/id\"\n", tls)
}

/// `tally produce` (rskafka, with our TLS settings) of `n` JSON records.
fn produce(rig: &TlsRig, config: &Path, topic: &str, n: usize) {
    let mut child = Command::new(TallyProcess::bin())
        .args([
            "produce",
            "--config",
            config.to_str().unwrap(),
            "--topic",
            topic,
        ])
        .env("TALLY_BROKERS", &rig.tls_addr)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tally produce");
    let mut input = String::new();
    for i in 0..n {
        input.push_str(&format!("{{\"id\":\"e-{i}\",\"n\":{i}}}\n"));
    }
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().expect("tally produce");
    assert!(
        out.status.success(),
        "tally produce failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn envs(rig: &TlsRig) -> Vec<(&str, &str)> {
    vec![("TALLY_BROKERS", rig.tls_addr.as_str())]
}

/// Runs `tally run` to delivery of `n` records, then stops it cleanly.
fn deliver(rig: &TlsRig, config: &Path, n: usize) {
    let mut tally = TallyProcess::spawn_in(
        rig.dir.path(),
        &["run", "--config", config.to_str().unwrap()],
        &envs(rig),
    );
    let out = rig.dir.path().join("delivered.jsonl");
    wait_for("delivery over TLS", RUN_TIMEOUT, || {
        count_lines(&out) >= n || !tally.is_running()
    });
    assert_eq!(count_lines(&out), n, "stderr:\n{}", tally.stderr());
    assert!(tally.terminate_and_wait(RUN_TIMEOUT).success());
}

/// `tally run` must stop by itself with a TLS error, not reconnect forever.
fn refused(rig: &TlsRig, config: &Path, expect: &[&str]) -> String {
    let mut tally = TallyProcess::spawn_in(
        rig.dir.path(),
        &["run", "--config", config.to_str().unwrap()],
        &envs(rig),
    );
    let status = tally
        .wait_timeout(RUN_TIMEOUT)
        .unwrap_or_else(|| panic!("tally kept running on a TLS failure:\n{}", tally.stderr()));
    assert!(!status.success());
    let stderr = tally.stderr();
    assert!(stderr.contains("TLS with"), "{stderr}");
    for e in expect {
        assert!(stderr.contains(e), "expected {e:?} in:\n{stderr}");
    }
    eprintln!("tally stderr:\n{stderr}");
    // One attempt, one error: no reconnect storm.
    assert_eq!(
        stderr.matches("cannot fetch metadata").count(),
        1,
        "{stderr}"
    );
    stderr
}

#[test]
fn tls_with_a_ca_delivers_end_to_end() {
    let rig = TlsRig::start(RigOptions::default());
    let topic = unique_topic("tls");
    rig.create_topic(&topic, 2);
    let cfg = config(&rig, &topic, &tls_table(Some(&rig.path("ca.pem")), None));
    let check = TallyProcess::run(
        rig.dir.path(),
        &["check", "--config", cfg.to_str().unwrap(), "--connect"],
        &envs(&rig),
        RUN_TIMEOUT,
    );
    assert!(check.status.success(), "{}\n{}", check.stdout, check.stderr);
    assert!(check.stdout.contains("# broker: ok"), "{}", check.stdout);
    produce(&rig, &cfg, &topic, 40);
    deliver(&rig, &cfg, 40);
}

#[test]
fn mtls_with_the_right_client_certificate_delivers_end_to_end() {
    let rig = TlsRig::start(RigOptions {
        require_client_cert: true,
        ..RigOptions::default()
    });
    let topic = unique_topic("mtls");
    rig.create_topic(&topic, 2);
    let (cert, key) = rig.client_identity(&rig.ca, "client");
    let cfg = config(
        &rig,
        &topic,
        &tls_table(Some(&rig.path("ca.pem")), Some((&cert, &key))),
    );
    produce(&rig, &cfg, &topic, 25);
    deliver(&rig, &cfg, 25);
}

#[test]
fn mtls_refuses_a_client_without_a_certificate() {
    let rig = TlsRig::start(RigOptions {
        require_client_cert: true,
        ..RigOptions::default()
    });
    let topic = unique_topic("mtls-none");
    let cfg = config(&rig, &topic, &tls_table(Some(&rig.path("ca.pem")), None));
    refused(&rig, &cfg, &["client certificate"]);
}

#[test]
fn mtls_refuses_a_certificate_from_another_ca() {
    let rig = TlsRig::start(RigOptions {
        require_client_cert: true,
        ..RigOptions::default()
    });
    let topic = unique_topic("mtls-other");
    let other = TestCa::new("some other CA");
    let (cert, key) = rig.client_identity(&other, "stranger");
    let cfg = config(
        &rig,
        &topic,
        &tls_table(Some(&rig.path("ca.pem")), Some((&cert, &key))),
    );
    refused(&rig, &cfg, &["client certificate"]);
}

#[test]
fn expired_server_certificate_is_refused() {
    let rig = TlsRig::start(RigOptions {
        expired_server_cert: true,
        ..RigOptions::default()
    });
    let topic = unique_topic("tls-expired");
    let cfg = config(&rig, &topic, &tls_table(Some(&rig.path("ca.pem")), None));
    refused(&rig, &cfg, &["expired"]);
}

#[test]
fn wrongly_named_server_certificate_is_refused() {
    let rig = TlsRig::start(RigOptions {
        server_names: vec!["kafka.elsewhere.example"],
        ..RigOptions::default()
    });
    let topic = unique_topic("tls-name");
    let cfg = config(&rig, &topic, &tls_table(Some(&rig.path("ca.pem")), None));
    refused(&rig, &cfg, &["not issued for the name", "server_name"]);
}

#[test]
fn unknown_ca_is_refused_and_bad_files_are_named() {
    let rig = TlsRig::start(RigOptions::default());
    let topic = unique_topic("tls-ca");
    // No ca_file: the built-in roots do not know the rig's CA.
    let cfg = config(&rig, &topic, &tls_table(None, None));
    refused(&rig, &cfg, &["not signed by a CA"]);

    let missing = rig.path("nope.pem");
    let cfg = config(&rig, &topic, &tls_table(Some(&missing), None));
    let out = TallyProcess::run(
        rig.dir.path(),
        &["run", "--config", cfg.to_str().unwrap()],
        &envs(&rig),
        RUN_TIMEOUT,
    );
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("nope.pem") && out.stderr.contains("ca_file"),
        "{}",
        out.stderr
    );
}

/// The broker's certificate changes under a running tally (here: expired):
/// the partition fetchers, not only the metadata loop, must stop the daemon
/// with the TLS error at once instead of reconnecting with backoff.
#[test]
fn a_fetcher_refused_by_tls_mid_run_stops_the_daemon() {
    let mut rig = TlsRig::start(RigOptions::default());
    let topic = unique_topic("tls-midrun");
    rig.create_topic(&topic, 2);
    let cfg = config(&rig, &topic, &tls_table(Some(&rig.path("ca.pem")), None));
    produce(&rig, &cfg, &topic, 20);
    let mut tally = TallyProcess::spawn_in(
        rig.dir.path(),
        &["run", "--config", cfg.to_str().unwrap()],
        &envs(&rig),
    );
    let out = rig.dir.path().join("delivered.jsonl");
    wait_for("delivery over TLS", RUN_TIMEOUT, || {
        count_lines(&out) >= 20 || !tally.is_running()
    });
    assert_eq!(count_lines(&out), 20, "stderr:\n{}", tally.stderr());

    rig.restart_terminator(true);
    // Within one metadata refresh (30 s) the metadata loop would stop it
    // too; the fetchers' own long polls notice first.
    let status = tally
        .wait_timeout(Duration::from_secs(25))
        .unwrap_or_else(|| panic!("tally kept running on a TLS failure:\n{}", tally.stderr()));
    assert!(!status.success());
    let stderr = tally.stderr();
    eprintln!("tally stderr:\n{stderr}");
    assert!(
        stderr.contains(&format!("cannot fetch {topic}/")) && stderr.contains("expired"),
        "the fetcher must report the refusal itself:\n{stderr}"
    );
    let refusals = stderr
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("not retrying"))
        .count();
    assert_eq!(
        refusals, 1,
        "one partition reports it, the run stops:\n{stderr}"
    );
    assert!(
        !stderr
            .lines()
            .any(|l| l.contains("fetch failed") && l.contains("TLS with")),
        "a TLS refusal was retried:\n{stderr}"
    );
}

/// SASL inside TLS (SASL_SSL): the handshake succeeds, then the login is
/// refused by the broker (its user store is a no-op) — once, naming the
/// mechanism and the user, never the password.
#[test]
fn sasl_over_tls_rejection_is_clear_and_final() {
    let rig = TlsRig::start(RigOptions {
        sasl: true,
        ..RigOptions::default()
    });
    let topic = unique_topic("sasl-ssl");
    let tls = tls_table(Some(&rig.path("ca.pem")), None);
    let sasl = "\n[kafka.sasl]\nmechanism = \"SCRAM-SHA-512\"\nusername = \"alice\"\npassword_env = \"KAFKA_PASSWORD\"\n";
    let cfg = config(&rig, &topic, &format!("{tls}{sasl}"));
    let password = "sasl-over-tls-secret-4711";
    let mut tally = TallyProcess::spawn_in(
        rig.dir.path(),
        &["run", "--config", cfg.to_str().unwrap()],
        &[
            ("TALLY_BROKERS", rig.tls_addr.as_str()),
            ("KAFKA_PASSWORD", password),
        ],
    );
    let status = tally
        .wait_timeout(RUN_TIMEOUT)
        .unwrap_or_else(|| panic!("tally kept running on a SASL failure:\n{}", tally.stderr()));
    assert!(!status.success());
    let stderr = tally.stderr();
    eprintln!("tally stderr:\n{stderr}");
    assert!(
        stderr.contains("SASL SCRAM-SHA-512 login as user \"alice\""),
        "{stderr}"
    );
    assert!(
        !stderr.contains("TLS with"),
        "the TLS handshake itself must succeed:\n{stderr}"
    );
    assert_eq!(
        stderr.matches("cannot fetch metadata").count(),
        1,
        "{stderr}"
    );
    assert!(!stderr.contains(password), "password in the log:\n{stderr}");
}
