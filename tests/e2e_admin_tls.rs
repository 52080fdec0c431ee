//! The admin API over HTTPS (`[admin.tls]`), with and without client
//! certificates, exercised as an operator would: curl-like requests with
//! rustls, and the CLI's own commands against the running daemon.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use support::tls::TestPki;
use support::{
    TallyProcess, count_lines, create_topic, produce_raw, unique_topic, wait_for,
    write_file_sink_config,
};

const CMD_TIMEOUT: Duration = Duration::from_secs(60);
const TOKEN: &str = "admin-tls-token";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port()
}

/// `GET path` over TLS trusting `ca`, presenting `identity`: the response
/// text, or the error that ended the exchange.
fn https_get(
    port: u16,
    path: &str,
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<String, String> {
    let config = tally::tls::client_config(Some(ca), identity).map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .map_err(|e| e.to_string())?;
    let mut text = String::new();
    tls.read_to_string(&mut text).map_err(|e| e.to_string())?;
    if text.is_empty() {
        return Err("connection closed without an answer".into());
    }
    Ok(text)
}

/// Plain HTTP to the TLS port gets no HTTP answer.
fn plain_get(port: u16, path: &str) -> String {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = tcp.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    let mut buf = Vec::new();
    let _ = tcp.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

fn admin_table(port: u16, pki: &TestPki, tls_extra: &str) -> String {
    format!(
        "[admin]\nlisten = \"127.0.0.1:{port}\"\ntoken_env = \"TALLY_ADMIN_TOKEN\"\n\n\
         [admin.tls]\ncert_file = {cert:?}\nkey_file = {key:?}\nca_file = {ca:?}\n{tls_extra}",
        cert = pki.server_cert.display().to_string(),
        key = pki.server_key.display().to_string(),
        ca = pki.ca.display().to_string(),
    )
}

/// mTLS: only clients with a certificate from `client_ca_file` get an
/// answer; the CLI presents its own and reads and purges through the daemon.
#[test]
fn admin_api_over_mutual_tls_serves_only_clients_with_our_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = TestPki::generate(d);
    let topic = unique_topic("e2e-admin-tls");
    create_topic(&topic, 1);
    produce_raw(&topic, br#"{"id":"ok-1"}"#, None);
    produce_raw(&topic, b"not json", None);

    let port = free_port();
    let client_side = format!(
        "client_ca_file = {ca:?}\nclient_cert_file = {cert:?}\nclient_key_file = {key:?}\n",
        ca = pki.ca.display().to_string(),
        cert = pki.client_cert.display().to_string(),
        key = pki.client_key.display().to_string(),
    );
    let config = write_file_sink_config(
        d,
        &[&topic],
        "json",
        "dedupe = \"/id\"\n",
        &admin_table(port, &pki, &client_side),
    );
    let cfg = config.to_str().unwrap();
    let env = [("TALLY_ADMIN_TOKEN", TOKEN)];

    let check = TallyProcess::check_connect(d, &config, &env);
    assert!(
        check
            .stdout
            .contains("# admin: ok (https, client certificates required)"),
        "{}\n{}",
        check.stdout,
        check.stderr
    );

    let mut daemon = TallyProcess::spawn_in(d, &["run", "--config", cfg], &env);
    wait_for(
        "1 delivered, 1 dead letter",
        Duration::from_secs(90),
        || {
            assert!(daemon.is_running(), "tally exited:\n{}", daemon.stderr());
            count_lines(d.join("delivered.jsonl")) >= 1
                && daemon.stderr().contains("kept in dead letters")
                && daemon.stderr().contains("admin API listening")
        },
    );
    assert!(
        daemon.stderr().contains("scheme=\"https\"") || daemon.stderr().contains("scheme=https"),
        "{}",
        daemon.stderr()
    );

    // Our client certificate: answered.
    let ok = https_get(
        port,
        "/healthz",
        &pki.ca,
        Some((&pki.client_cert, &pki.client_key)),
    );
    let ok = ok.expect("healthz over mTLS");
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    let metrics = https_get(
        port,
        "/metrics",
        &pki.ca,
        Some((&pki.client_cert, &pki.client_key)),
    )
    .unwrap();
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");

    // No client certificate, or one from another CA: no answer.
    let none = https_get(port, "/healthz", &pki.ca, None);
    assert!(
        none.is_err(),
        "answered without a client certificate: {none:?}"
    );
    let stranger = https_get(
        port,
        "/healthz",
        &pki.ca,
        Some((&pki.stranger_cert, &pki.stranger_key)),
    );
    assert!(
        stranger.is_err(),
        "answered a certificate from another CA: {stranger:?}"
    );
    // Plain HTTP on the TLS port: no HTTP answer.
    let plain = plain_get(port, "/healthz");
    assert!(!plain.contains("200 OK"), "{plain}");
    // Refused handshakes are logged; the server keeps serving.
    wait_for(
        "the refused handshakes logged",
        Duration::from_secs(10),
        || daemon.stderr().contains("TLS handshake refused"),
    );
    assert!(
        https_get(
            port,
            "/healthz",
            &pki.ca,
            Some((&pki.client_cert, &pki.client_key))
        )
        .is_ok()
    );

    // The CLI reads and writes through the daemon over mTLS.
    let list = TallyProcess::run(
        d,
        &["dlq", "list", "--config", cfg, "--json"],
        &env,
        CMD_TIMEOUT,
    );
    assert!(list.status.success(), "{}\n{}", list.stdout, list.stderr);
    let letters: Vec<serde_json::Value> = list
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(letters.len(), 1, "{letters:?}");
    let id = letters[0]["id"].to_string();
    let purged = TallyProcess::run(
        d,
        &["dlq", "purge", "--config", cfg, &id],
        &env,
        CMD_TIMEOUT,
    );
    assert!(
        purged.status.success(),
        "{}\n{}",
        purged.stdout,
        purged.stderr
    );
    assert!(purged.stdout.contains("purged 1"), "{}", purged.stdout);

    // A CLI config without the client certificate is refused, clearly.
    let other = d.join("no-client-cert.toml");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("client_cert_file") && !l.starts_with("client_key_file"))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&other, text).unwrap();
    let refused = TallyProcess::run(
        d,
        &["dlq", "list", "--config", other.to_str().unwrap()],
        &env,
        CMD_TIMEOUT,
    );
    assert!(!refused.status.success(), "{}", refused.stdout);
    assert!(
        refused.stderr.contains("admin API") && refused.stderr.contains("CertificateRequired"),
        "{}",
        refused.stderr
    );

    assert!(
        daemon.terminate_and_wait(Duration::from_secs(45)).success(),
        "{}",
        daemon.stderr()
    );
}

/// TLS without client certificates: the CLI trusts the configured CA; a key
/// that does not belong to the certificate stops `tally run`, naming both files.
#[test]
fn admin_api_over_tls_and_a_wrong_key_fails_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = TestPki::generate(d);
    let topic = unique_topic("e2e-admin-tls-plain");
    create_topic(&topic, 1);
    produce_raw(&topic, b"not json", None);
    let port = free_port();
    let config = write_file_sink_config(
        d,
        &[&topic],
        "json",
        "dedupe = \"/id\"\n",
        &admin_table(port, &pki, ""),
    );
    let cfg = config.to_str().unwrap();
    let env = [("TALLY_ADMIN_TOKEN", TOKEN)];

    let mut daemon = TallyProcess::spawn_in(d, &["run", "--config", cfg], &env);
    wait_for(
        "1 dead letter and the API up",
        Duration::from_secs(90),
        || {
            assert!(daemon.is_running(), "tally exited:\n{}", daemon.stderr());
            daemon.stderr().contains("kept in dead letters")
                && daemon.stderr().contains("admin API listening")
        },
    );
    let ok = https_get(port, "/readyz", &pki.ca, None).expect("readyz over TLS");
    assert!(ok.starts_with("HTTP/1.1 "), "{ok}");
    let list = TallyProcess::run(
        d,
        &["dlq", "list", "--config", cfg, "--json"],
        &env,
        CMD_TIMEOUT,
    );
    assert!(list.status.success(), "{}\n{}", list.stdout, list.stderr);
    assert_eq!(list.stdout.lines().count(), 1, "{}", list.stdout);
    assert!(
        daemon.terminate_and_wait(Duration::from_secs(45)).success(),
        "{}",
        daemon.stderr()
    );

    // The wrong key for the certificate: the start fails, naming the files.
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("key_file = {:?}", pki.server_key.display().to_string()),
        &format!("key_file = {:?}", pki.stranger_key.display().to_string()),
    );
    std::fs::write(&config, text).unwrap();
    let run = TallyProcess::run(d, &["run", "--config", cfg], &env, CMD_TIMEOUT);
    assert!(!run.status.success(), "{}", run.stderr);
    assert!(
        run.stderr.contains("does not match the certificate")
            && run.stderr.contains("stranger.key")
            && run.stderr.contains("server.pem"),
        "{}",
        run.stderr
    );
}
