//! The test RabbitMQ (scripts/rabbitmq.sh, `TALLY_TEST_AMQP_URL`) seen
//! through an independent client: Python pika via `amqp_tool.py`.
#![allow(dead_code)]

use std::process::Command;
use std::time::Instant;

use serde::Deserialize;

/// The test node's URL; panics with how to start one.
pub fn amqp_url() -> String {
    match std::env::var("TALLY_TEST_AMQP_URL") {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "TALLY_TEST_AMQP_URL is not set: run scripts/test.sh, or \
             `scripts/rabbitmq.sh start` and export the URL it prints"
        ),
    }
}

/// One message as pika received it.
#[derive(Debug, Clone, Deserialize)]
pub struct AmqpMessage {
    pub exchange: String,
    pub routing_key: String,
    pub redelivered: bool,
    pub message_id: Option<String>,
    pub content_type: Option<String>,
    pub delivery_mode: Option<u8>,
    pub app_id: Option<String>,
    pub headers: serde_json::Map<String, serde_json::Value>,
    pub body: String,
}

fn tool(args: &[&str]) -> String {
    let path = super::repo_root().join("tests/support/amqp_tool.py");
    let out = Command::new(super::python())
        .arg(path)
        .args(args)
        .output()
        .expect("run amqp_tool.py");
    assert!(
        out.status.success(),
        "amqp_tool {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Declares `exchange` (durable, of `kind`) and a durable queue bound to it with `#`.
pub fn setup_queue(exchange: &str, kind: &str, queue: &str) {
    setup_queue_at(&amqp_url(), exchange, kind, queue);
}

pub fn setup_queue_at(url: &str, exchange: &str, kind: &str, queue: &str) {
    tool(&[
        "setup",
        "--url",
        url,
        "--exchange",
        exchange,
        "--type",
        kind,
        "--queue",
        queue,
    ]);
}

pub fn delete_exchange(exchange: &str) {
    tool(&[
        "delete-exchange",
        "--url",
        &amqp_url(),
        "--exchange",
        exchange,
    ]);
}

/// Every message now in `queue` (consumed, acked).
pub fn drain(queue: &str) -> Vec<AmqpMessage> {
    drain_at(&amqp_url(), queue)
}

pub fn drain_at(url: &str, queue: &str) -> Vec<AmqpMessage> {
    tool(&["drain", "--url", url, "--queue", queue])
        .lines()
        .map(|l| serde_json::from_str(l).expect("amqp_tool line"))
        .collect()
}

/// How many messages are ready in `queue` (none consumed).
pub fn count_at(url: &str, queue: &str) -> u64 {
    let v: serde_json::Value =
        serde_json::from_str(tool(&["count", "--url", url, "--queue", queue]).trim())
            .expect("amqp_tool count");
    v["messages"].as_u64().expect("messages")
}

/// A RabbitMQ node of one test's own (scripts/rabbitmq.sh NAME), for tests
/// that stop and restart it; stopped when dropped.
pub struct RabbitNode {
    name: String,
    url: String,
    amqps_url: Option<String>,
}

impl RabbitNode {
    /// Boots a fresh node named `name` (unique per test run).
    pub fn start(name: &str) -> Self {
        Self::boot(name, None)
    }

    /// A fresh node that also listens for AMQPS with `ca.pem`, `server.pem`
    /// and `server.key` from `tls_dir`, requiring a client certificate.
    pub fn start_tls(name: &str, tls_dir: &std::path::Path) -> Self {
        Self::boot(name, Some(tls_dir))
    }

    fn boot(name: &str, tls_dir: Option<&std::path::Path>) -> Self {
        let mut cmd = Command::new(super::repo_root().join("scripts/rabbitmq.sh"));
        cmd.args(["start", name]);
        if let Some(dir) = tls_dir {
            cmd.env("TALLY_RABBIT_TLS_DIR", dir);
        }
        let out = cmd.output().expect("run scripts/rabbitmq.sh");
        assert!(
            out.status.success(),
            "rabbitmq.sh start {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let value = |var: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(var)?.strip_prefix('='))
                .map(str::to_string)
        };
        Self {
            name: name.to_string(),
            url: value("TALLY_TEST_AMQP_URL").expect("AMQP URL printed"),
            amqps_url: value("TALLY_TEST_AMQPS_URL"),
        }
    }

    /// The AMQPS URL of a node started with `start_tls`.
    pub fn amqps_url(&self) -> &str {
        self.amqps_url.as_deref().expect("node started without TLS")
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Stops the node (clients see the connection drop); returns how long it took.
    pub fn stop(&self) -> std::time::Duration {
        let t0 = Instant::now();
        script("stop", &self.name);
        t0.elapsed()
    }

    /// Starts the stopped node again: same data, same URL; returns how long it took.
    pub fn resume(&self) -> std::time::Duration {
        let t0 = Instant::now();
        let url = script("resume", &self.name);
        let url = url.lines().next().unwrap_or_default();
        assert_eq!(url, self.url, "resumed node moved");
        t0.elapsed()
    }
}

impl Drop for RabbitNode {
    fn drop(&mut self) {
        let _ = Command::new(super::repo_root().join("scripts/rabbitmq.sh"))
            .args(["stop", &self.name])
            .output();
        // Its data is only for `resume`: one node per test run, nothing to keep.
        let tools = std::env::var_os("TALLY_TOOLS")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| super::repo_root().join(".tools"));
        let _ = std::fs::remove_dir_all(tools.join("run").join(format!("rabbit-{}", self.name)));
    }
}

/// Runs scripts/rabbitmq.sh CMD NAME; returns the URL it prints (if any).
fn script(cmd: &str, name: &str) -> String {
    let out = Command::new(super::repo_root().join("scripts/rabbitmq.sh"))
        .args([cmd, name])
        .output()
        .expect("run scripts/rabbitmq.sh");
    assert!(
        out.status.success(),
        "rabbitmq.sh {cmd} {name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_start_matches("TALLY_TEST_AMQP_URL=")
        .to_string()
}
