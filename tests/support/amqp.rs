//! The test RabbitMQ (scripts/rabbitmq.sh, `TALLY_TEST_AMQP_URL`) seen
//! through an independent client: Python pika via `amqp_tool.py`.
#![allow(dead_code)]

use std::process::Command;

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
    tool(&[
        "setup",
        "--url",
        &amqp_url(),
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
    tool(&["drain", "--url", &amqp_url(), "--queue", queue])
        .lines()
        .map(|l| serde_json::from_str(l).expect("amqp_tool line"))
        .collect()
}
