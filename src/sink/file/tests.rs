use std::sync::Arc;

use bytes::Bytes;

use super::*;

fn outgoing(offset: i64, key: Option<&'static [u8]>, event: &'static str) -> Outgoing {
    Outgoing {
        route: Arc::from("r"),
        topic: Arc::from("t\"q"),
        partition: 3,
        offset,
        key: key.map(Bytes::from_static),
        dedupe_key: Some(format!("k{offset}")),
        event: Bytes::from_static(event.as_bytes()),
        usage: None,
        received_at: chrono::Utc::now(),
    }
}

#[tokio::test]
async fn writes_lines_with_embedded_event() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let sink = FileSink::open(&path).unwrap();
    let a = outgoing(7, Some(b"key"), r#"{"amount":12.3400000000000000001}"#);
    let b = outgoing(8, Some(&[0xff, 0x00]), r#"{"x":1}"#);
    let results = sink.deliver(&[&a, &b]).await;
    assert!(results.iter().all(|r| r.is_ok()));
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(
        lines[0],
        r#"{"topic":"t\"q","partition":3,"offset":7,"key":"key","dedupe_key":"k7","event":{"amount":12.3400000000000000001}}"#
    );
    let v: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
    assert_eq!(v["key_hex"], "ff00");
    assert_eq!(v["event"]["x"], 1);
}

#[tokio::test]
async fn torn_last_line_is_cut_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    std::fs::write(&path, "{\"a\":1}\n{\"b\":").unwrap();
    let sink = FileSink::open(&path).unwrap();
    let c = outgoing(1, None, "{}");
    assert!(sink.deliver(&[&c]).await[0].is_ok());
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("{\"a\":1}\n{\"topic\""), "{text}");
    assert_eq!(text.lines().count(), 2);
}
