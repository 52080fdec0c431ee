//! SASL against a real Tansu started with `--authentication`, and the
//! secret-leak check: no secret value in `tally check` output or in the
//! logs of a run.
//!
//! This broker's SASL user store is a no-op: every SCRAM login fails with
//! `unknown-user` and PLAIN is not offered (it hangs up on the handshake).
//! So what is tested is the negotiation and the rejection path: a clear,
//! non-retrying error naming the mechanism and the user. The success path
//! cannot be exercised here (README "Security").
//!
//! Needs scripts/test.sh (TALLY_TANSU_BIN).

mod support;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::{TallyProcess, unique_topic, wait_for};

const RUN_TIMEOUT: Duration = Duration::from_secs(60);
const SASL_PASSWORD: &str = "sasl-pw-7f3a9c1e";
const KB_PASSWORD: &str = "kb-pw-4d2b8e6a";
const KB_API_SECRET: &str = "kb-secret-9a1c5f7d";
const HOOK_AUTH: &str = "Bearer hook-0c8e2a4f";
const ADMIN_TOKEN: &str = "admin-token-6b9d1f3e";

struct AuthBroker {
    child: Child,
    addr: String,
}

impl Drop for AuthBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn auth_broker() -> AuthBroker {
    let tansu =
        std::env::var("TALLY_TANSU_BIN").expect("TALLY_TANSU_BIN is not set: run scripts/test.sh");
    let addr = format!("127.0.0.1:{}", free_port());
    let child = Command::new(tansu)
        .args([
            "broker",
            "--cluster-id",
            "tally-sasl",
            "--listener-url",
            &format!("tcp://{addr}"),
            "--advertised-listener-url",
            &format!("tcp://{addr}"),
            "--storage-engine",
            "memory://tansu/",
            "--authentication",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tansu");
    let b = AuthBroker { child, addr };
    wait_for("tansu to accept", Duration::from_secs(30), || {
        TcpStream::connect(&b.addr).is_ok()
    });
    b
}

fn sasl_config(dir: &Path, mechanism: &str) -> PathBuf {
    let topic = unique_topic("sasl");
    support::write_file_sink_config(
        dir,
        &[&topic],
        "json",
        "dedupe = \"/id\"\n",
        &format!(
            "\n[kafka.sasl]\nmechanism = {mechanism:?}\nusername = \"alice\"\npassword_env = \"KAFKA_PASSWORD\"\n"
        ),
    )
}

/// `tally run` stops by itself, once, with an error naming mechanism and user.
fn rejected(mechanism: &str, expect: &str) {
    let broker = auth_broker();
    let dir = tempfile::tempdir().unwrap();
    let cfg = sasl_config(dir.path(), mechanism);
    let mut tally = TallyProcess::spawn_in(
        dir.path(),
        &["run", "--config", cfg.to_str().unwrap()],
        &[
            ("TALLY_BROKERS", broker.addr.as_str()),
            ("KAFKA_PASSWORD", SASL_PASSWORD),
        ],
    );
    let status = tally
        .wait_timeout(RUN_TIMEOUT)
        .unwrap_or_else(|| panic!("tally kept running on a SASL failure:\n{}", tally.stderr()));
    assert!(!status.success());
    let stderr = tally.stderr();
    eprintln!("tally stderr:\n{stderr}");
    let named = format!("SASL {mechanism} login as user \"alice\"");
    assert!(stderr.contains(&named), "expected {named:?} in:\n{stderr}");
    assert!(stderr.contains(expect), "expected {expect:?} in:\n{stderr}");
    assert_eq!(
        stderr.matches("cannot fetch metadata").count(),
        1,
        "retried:\n{stderr}"
    );
    assert!(
        !stderr.contains(SASL_PASSWORD),
        "password in the log:\n{stderr}"
    );
}

#[test]
fn scram_sha_256_rejection_is_clear_and_final() {
    rejected("SCRAM-SHA-256", "unknown-user");
}

#[test]
fn scram_sha_512_rejection_is_clear_and_final() {
    rejected("SCRAM-SHA-512", "unknown-user");
}

#[test]
fn plain_not_offered_is_clear_and_final() {
    rejected("PLAIN", "does not offer this mechanism");
}

#[test]
fn producer_sasl_rejection_is_an_error_not_a_hang() {
    let broker = auth_broker();
    let dir = tempfile::tempdir().unwrap();
    let cfg = sasl_config(dir.path(), "SCRAM-SHA-256");
    // rskafka retries a refused login inside its own connect; tally bounds
    // that by connect_timeout + request_timeout.
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "[kafka]\n",
        "[kafka]\nconnect_timeout = \"2s\"\nrequest_timeout = \"3s\"\n",
    );
    std::fs::write(&cfg, text).unwrap();
    let mut child = Command::new(TallyProcess::bin())
        .args(["produce", "--config", cfg.to_str().unwrap(), "--topic", "t"])
        .env("TALLY_BROKERS", &broker.addr)
        .env("KAFKA_PASSWORD", SASL_PASSWORD)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut status = None;
    wait_for("tally produce to give up", RUN_TIMEOUT, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    eprintln!("tally produce stderr:\n{err}");
    assert!(!status.unwrap().success(), "{err}");
    assert!(!err.contains(SASL_PASSWORD), "{err}");
    assert!(
        err.contains("SASL SCRAM-SHA-256 login as user \"alice\"") && err.contains("unknown-user"),
        "{err}"
    );
}

/// Every secret tally knows by reference, set to a recognisable value; then
/// `tally check --connect` and a run (debug logs) must not print one of them.
#[test]
fn no_secret_value_in_check_output_or_logs() {
    let broker = auth_broker();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let kb_password = d.join("kb-password");
    std::fs::write(&kb_password, format!("{KB_PASSWORD}\n")).unwrap();
    let topic = unique_topic("secrets");
    let text = format!(
        r#"[kafka]
brokers = ["127.0.0.1:1"]
[kafka.sasl]
mechanism = "SCRAM-SHA-512"
username = "alice"
password_env = "KAFKA_PASSWORD"

[store]
path = {store:?}

[[routes]]
name = "usage"
topics = ["{topic}-kb"]
format = "killbill-usage"
sink = "killbill"

[[routes]]
name = "hook"
topics = ["{topic}-http"]
format = "json"
dedupe = "/id"
sink = "http"

[sinks.killbill]
url = "http://127.0.0.1:9/"
username = "admin"
password_file = {kb:?}
created_by = "tally-test"
[sinks.killbill.tenants."t1"]
api_key = "key-1"
api_secret_env = "KB_SECRET"

[sinks.http]
url = "http://127.0.0.1:9/hook"
[sinks.http.headers_env]
Authorization = "HOOK_AUTH"

[admin]
listen = "127.0.0.1:0"
token_env = "TALLY_ADMIN_TOKEN"
"#,
        store = d.join("state").display().to_string(),
        kb = kb_password.display().to_string(),
    );
    let cfg = d.join("tally.toml");
    std::fs::write(&cfg, text).unwrap();
    let envs = [
        ("TALLY_BROKERS", broker.addr.as_str()),
        ("KAFKA_PASSWORD", SASL_PASSWORD),
        ("KB_SECRET", KB_API_SECRET),
        ("HOOK_AUTH", HOOK_AUTH),
        ("TALLY_ADMIN_TOKEN", ADMIN_TOKEN),
        ("RUST_LOG", "debug"),
    ];
    let check = TallyProcess::run(
        d,
        &["check", "--config", cfg.to_str().unwrap(), "--connect"],
        &envs,
        RUN_TIMEOUT,
    );
    let run = TallyProcess::run(
        d,
        &["run", "--config", cfg.to_str().unwrap()],
        &envs,
        RUN_TIMEOUT,
    );
    let all = format!(
        "{}\n{}\n{}\n{}",
        check.stdout, check.stderr, run.stdout, run.stderr
    );
    // The references are shown, so the check is not vacuous.
    assert!(check.stdout.contains("KAFKA_PASSWORD"), "{}", check.stdout);
    assert!(check.stdout.contains("HOOK_AUTH"), "{}", check.stdout);
    assert!(run.stderr.contains("SASL SCRAM-SHA-512"), "{}", run.stderr);
    for secret in [
        SASL_PASSWORD,
        KB_PASSWORD,
        KB_API_SECRET,
        "hook-0c8e2a4f",
        ADMIN_TOKEN,
    ] {
        assert!(!all.contains(secret), "secret {secret:?} leaked:\n{all}");
    }
}
