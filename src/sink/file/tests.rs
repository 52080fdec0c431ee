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
    let sink = FileSink::open(&path, PageCache::Drop).unwrap();
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
    let sink = FileSink::open(&path, PageCache::Drop).unwrap();
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

/// Pages of `path` resident in the page cache, of all its pages.
#[cfg(target_os = "linux")]
fn resident_pages(path: &std::path::Path) -> (usize, usize) {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path).unwrap();
    let len = file.metadata().unwrap().len() as usize;
    let pages = len.div_ceil(4096);
    let mut vec = vec![0u8; pages];
    // SAFETY: a read-only shared mapping of a file this test owns, unmapped
    // before return; mincore writes one byte per page into `vec`.
    unsafe {
        let addr = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        );
        assert_ne!(addr, libc::MAP_FAILED);
        assert_eq!(libc::mincore(addr, len, vec.as_mut_ptr()), 0);
        libc::munmap(addr, len);
    }
    (vec.iter().filter(|b| **b & 1 == 1).count(), pages)
}

/// Whether `dir` is on tmpfs, where the page cache is the file itself and
/// cannot be dropped.
#[cfg(target_os = "linux")]
fn on_tmpfs(dir: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
    // SAFETY: statfs fills the zeroed struct for a valid C path.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statfs(c.as_ptr(), &mut st) }, 0);
    st.f_type == libc::TMPFS_MAGIC
}

/// `page_cache = "drop"` leaves at most the last page of the written
/// file cached; `"keep"` leaves it all.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn synced_pages_leave_the_page_cache_unless_kept() {
    let dir = tempfile::tempdir().unwrap();
    if on_tmpfs(dir.path()) {
        eprintln!(
            "skipped: {} is on tmpfs, whose pages cannot be dropped",
            dir.path().display()
        );
        return;
    }
    let event = format!("{{\"pad\":\"{}\"}}", "x".repeat(2000));
    let records: Vec<Outgoing> = (0..400)
        .map(|i| outgoing(i, Some(b"k"), "{}"))
        .map(|mut o| {
            o.event = Bytes::from(event.clone());
            o
        })
        .collect();
    for (policy, name) in [
        (PageCache::Drop, "drop.jsonl"),
        (PageCache::Keep, "keep.jsonl"),
    ] {
        let path = dir.path().join(name);
        let sink = FileSink::open(&path, policy).unwrap();
        for chunk in records.chunks(50) {
            let batch: Vec<&Outgoing> = chunk.iter().collect();
            assert!(sink.deliver(&batch).await.iter().all(|r| r.is_ok()));
        }
        // Counted before the file is read back, which caches it again.
        let (resident, pages) = resident_pages(&path);
        assert!(pages > 200, "{pages}");
        match policy {
            PageCache::Drop => assert!(resident <= 1, "{resident} of {pages} pages still cached"),
            PageCache::Keep => assert_eq!(resident, pages),
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 400);
    }
}
