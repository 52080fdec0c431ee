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

/// One call with records of two topics and two partitions, and keys of
/// every kind: each line is what a JSON serializer writes for it.
#[test]
fn lines_match_a_serializer_across_topics_partitions_and_keys() {
    let topics: [Arc<str>; 2] = [Arc::from("usage"), Arc::from("t\"q\u{1}")];
    let keys: [Option<&[u8]>; 6] = [
        Some(b"4f7c2a1e-9b3d-4c8e-a2f1-0d9e8b7c6a5f"),
        Some("clé ✓".as_bytes()),
        Some(b"quote\"back\\slash\ttab"),
        Some(&[0xff, 0x00, 0x41]),
        Some(b""),
        None,
    ];
    let mut records = Vec::new();
    for (i, key) in keys.iter().cycle().take(24).enumerate() {
        let mut r = outgoing(i as i64 * 1_000_003, None, r#"{"x":1}"#);
        r.topic = Arc::clone(&topics[(i / 3) % 2]);
        r.partition = [0, 7, -1][i % 3];
        r.key = key.map(Bytes::copy_from_slice);
        r.dedupe_key = (i % 4 != 0).then(|| format!("ten/sub\"{i}"));
        records.push(r);
    }
    let mut buf = Vec::new();
    let mut lines = line::LineWriter::default();
    for r in &records {
        lines.write_line(&mut buf, r);
    }
    let text = String::from_utf8(buf).unwrap();
    let got: Vec<&str> = text.lines().collect();
    assert_eq!(got.len(), records.len());
    for (line, r) in got.iter().zip(&records) {
        let key = r.key.as_deref().map(std::str::from_utf8);
        let mut want = format!(
            r#"{{"topic":{},"partition":{},"offset":{},"key":{}"#,
            serde_json::to_string(&*r.topic).unwrap(),
            r.partition,
            r.offset,
            match key {
                Some(Ok(k)) => serde_json::to_string(k).unwrap(),
                _ => "null".to_string(),
            }
        );
        if let Some(Err(_)) = key {
            let hex: String = r
                .key
                .iter()
                .flat_map(|k| k.iter())
                .map(|b| format!("{b:02x}"))
                .collect();
            want.push_str(&format!(r#","key_hex":"{hex}""#));
        }
        want.push_str(&format!(
            r#","dedupe_key":{},"event":{{"x":1}}}}"#,
            serde_json::to_string(&r.dedupe_key).unwrap()
        ));
        assert_eq!(*line, want);
    }
}
