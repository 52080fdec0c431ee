//! Store behaviour tests: durability across reopen, locking, schema and
//! corruption refusal, offset monotonicity, prune, dead letters, lookup.

use std::time::{Duration, Instant};

use super::*;

fn cfg(dir: &std::path::Path) -> StoreConfig {
    StoreConfig {
        path: dir.to_path_buf(),
        cache_capacity_bytes: 8 << 20,
    }
}

fn batch(
    route: &str,
    topic: &str,
    partition: i32,
    first: i64,
    next: i64,
    keys: &[&str],
) -> CommitBatch {
    CommitBatch {
        route: route.into(),
        topic: topic.into(),
        partition,
        first_offset: first,
        next_offset: next,
        keys: keys.iter().map(|k| k.to_string()).collect(),
        digests: keys.iter().map(|k| digest(route, k)).collect(),
        dead_letters: vec![],
        changelog: None,
    }
}

fn dl(offset: i64, payload: Vec<u8>) -> DeadLetter {
    DeadLetter {
        route: "usage".into(),
        topic: "t".into(),
        partition: 0,
        offset,
        timestamp_ms: 1_700_000_000_000,
        key: Some(vec![0xff, 0x00, 0xfe]),
        headers: vec![("h1".into(), Some(vec![0x80, 0x81])), ("null".into(), None)],
        payload: Some(payload),
        reason: "amount is not a decimal".into(),
        class: "decode".into(),
        attempts: 1,
        first_seen_ms: 5,
        last_seen_ms: 6,
    }
}

#[test]
fn store_is_send_and_sync() {
    fn assert<T: Send + Sync>() {}
    assert::<Store>();
}

#[test]
fn digest_is_scoped_by_route() {
    assert_ne!(digest("a", "k"), digest("b", "k"));
    // The 0 separator keeps ("ab","c") and ("a","bc") apart.
    assert_ne!(digest("ab", "c"), digest("a", "bc"));
    let long = "x".repeat(1000);
    assert_eq!(
        digest("r", &long),
        xxhash_rust::xxh3::xxh3_128(format!("r\0{long}").as_bytes())
    );
}

#[test]
fn missing_directory_is_created_private() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a/b/state");
    let s = Store::open(&cfg(&dir)).unwrap();
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(s.id_count(), 0);
    assert!(s.offsets().unwrap().is_empty());
}

#[test]
fn commit_then_reopen_restores_offsets_and_index() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let s = Store::open(&cfg(tmp.path())).unwrap();
        let stats = s
            .commit(&[
                batch("usage", "t", 0, 0, 3, &["a", "b", "c"]),
                batch("usage", "t", 1, 10, 12, &["d", "e"]),
                batch("usage", "u", 0, 0, 5, &[]), // no keys: still advances
            ])
            .unwrap();
        assert_eq!(stats.ids_written, 5);
        assert_eq!(s.id_count(), 5);
        assert!(s.contains(digest("usage", "a")));
    }
    let s = Store::open(&cfg(tmp.path())).unwrap();
    assert_eq!(s.id_count(), 5);
    for k in ["a", "b", "c", "d", "e"] {
        assert!(s.contains(digest("usage", k)), "{k}");
    }
    assert!(!s.contains(digest("usage", "f")));
    assert!(!s.contains(digest("other-route", "a")));
    assert_eq!(s.offset("t", 0).unwrap().unwrap().next_offset, 3);
    assert_eq!(s.offset("t", 1).unwrap().unwrap().next_offset, 12);
    assert_eq!(s.offset("u", 0).unwrap().unwrap().next_offset, 5);
    assert_eq!(s.offset("t", 2).unwrap(), None);
    let all: Vec<_> = s
        .offsets()
        .unwrap()
        .into_iter()
        .map(|(t, p, e)| (t, p, e.next_offset))
        .collect();
    assert_eq!(
        all,
        vec![("t".into(), 0, 3), ("t".into(), 1, 12), ("u".into(), 0, 5)]
    );
    // Sequences continue after reopen (no overwrite of batch 0/1).
    s.commit(&[batch("usage", "t", 0, 3, 4, &["f"])]).unwrap();
    let seqs: Vec<u64> = s.batches().unwrap().iter().map(|b| b.seq).collect();
    assert_eq!(seqs.len(), 3);
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn ids_committed_while_the_index_grows_are_found_before_and_after_reopen() {
    // Enough IDs, from an empty store, that every index shard grows several
    // times inside the commits; a reopen rebuilds the index presized.
    let tmp = tempfile::tempdir().unwrap();
    let keys: Vec<String> = (0..40_000).map(|i| format!("grow-{i}")).collect();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    {
        let s = Store::open(&cfg(tmp.path())).unwrap();
        let mut next = 0i64;
        for (n, chunk) in refs.chunks(3_000).enumerate() {
            let p = (n % 4) as i32;
            let first = next;
            next += chunk.len() as i64;
            // A batch repeating a stored key and one of its own.
            let mut with_dups = chunk.to_vec();
            with_dups.push(refs[0]);
            with_dups.push(chunk[0]);
            let st = s
                .commit(&[batch("usage", "t", p, first, next, &with_dups)])
                .unwrap();
            assert_eq!(
                (st.ids_written, st.duplicates_skipped),
                (chunk.len(), 2),
                "{n}"
            );
        }
        assert_eq!(s.id_count(), keys.len());
        assert!(keys.iter().all(|k| s.contains(digest("usage", k))));
    }
    let s = Store::open(&cfg(tmp.path())).unwrap();
    assert_eq!(s.id_count(), keys.len());
    assert!(keys.iter().all(|k| s.contains(digest("usage", k))));
    assert!(!s.contains(digest("usage", "grow-40000")));
    let st = s
        .commit(&[batch(
            "usage",
            "t",
            0,
            1_000_000,
            1_000_002,
            &[refs[7], "new"],
        )])
        .unwrap();
    assert_eq!((st.ids_written, st.duplicates_skipped), (1, 1));
}

#[test]
fn duplicates_are_stored_once() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Store::open(&cfg(tmp.path())).unwrap();
    s.commit(&[batch("r", "t", 0, 0, 2, &["a", "b"])]).unwrap();
    let st = s
        .commit(&[batch("r", "t", 0, 2, 5, &["b", "c", "c"])])
        .unwrap();
    assert_eq!((st.ids_written, st.duplicates_skipped), (1, 2));
    assert_eq!(s.id_count(), 3);
    let b = s.batches().unwrap();
    assert_eq!(b[1].count, 1);
    assert_eq!(
        s.batch_keys(b[1].seq).unwrap().unwrap(),
        vec!["c".to_string()]
    );
}

#[test]
fn second_open_in_same_process_is_locked_immediately() {
    let tmp = tempfile::tempdir().unwrap();
    let _s = Store::open(&cfg(tmp.path())).unwrap();
    let started = Instant::now();
    let err = Store::open(&cfg(tmp.path())).expect_err("second open must fail");
    assert!(started.elapsed() < Duration::from_secs(1));
    match &err {
        StoreError::Locked { pid, .. } => assert_eq!(*pid, Some(std::process::id())),
        other => panic!("expected Locked, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("in use by another tally process"), "{msg}");
    assert!(
        msg.contains(&format!("pid {}", std::process::id())),
        "{msg}"
    );
    assert!(msg.contains(&tmp.path().display().to_string()), "{msg}");
}

#[test]
fn lock_is_released_on_drop() {
    let tmp = tempfile::tempdir().unwrap();
    drop(Store::open(&cfg(tmp.path())).unwrap());
    Store::open(&cfg(tmp.path())).unwrap();
}

#[test]
fn second_process_is_locked() {
    // flock held by this process must stop another process too: probe with flock(1).
    let tmp = tempfile::tempdir().unwrap();
    let _s = Store::open(&cfg(tmp.path())).unwrap();
    let lock = tmp.path().join("tally.lock");
    match std::process::Command::new("flock")
        .arg("-n")
        .arg(&lock)
        .arg("true")
        .status()
    {
        Ok(st) => assert!(!st.success(), "another process could take the lock"),
        Err(_) => eprintln!("flock(1) not available; skipped"),
    }
}

#[test]
fn newer_schema_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    drop(Store::open(&cfg(tmp.path())).unwrap());
    {
        let db = sled_open_retrying(tmp.path());
        db.open_tree("meta")
            .unwrap()
            .insert("schema_version", &99u32.to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    let err = Store::open(&cfg(tmp.path())).expect_err("must refuse");
    assert!(
        matches!(
            err,
            StoreError::NewerSchema {
                found: 99,
                supported: 2,
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("99") && msg.contains("up to 2"), "{msg}");
}

#[test]
fn garbage_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("notes.txt"), "hello").unwrap();
    let err = Store::open(&cfg(tmp.path())).expect_err("must refuse");
    assert!(matches!(err, StoreError::NotATallyStore { .. }), "{err:?}");
    assert!(err.to_string().contains("notes.txt"));
    // Nothing written into the foreign directory.
    assert!(!tmp.path().join("db").exists());
    assert!(!tmp.path().join("tally.lock").exists());
}

#[test]
fn foreign_sled_db_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let db = sled_open_retrying(tmp.path());
        db.insert("something", "else").unwrap();
        db.flush().unwrap();
    }
    let err = Store::open(&cfg(tmp.path())).expect_err("must refuse");
    assert!(matches!(err, StoreError::NotATallyStore { .. }), "{err:?}");
    assert!(err.to_string().contains("no tally schema_version"));
}

#[test]
fn corrupt_sled_files_are_refused_not_reset() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let s = Store::open(&cfg(tmp.path())).unwrap();
        s.commit(&[batch("r", "t", 0, 0, 1, &["a"])]).unwrap();
    }
    std::fs::write(tmp.path().join("conf"), b"\x00garbage\xff").unwrap();
    std::fs::write(tmp.path().join("db"), vec![0xabu8; 4096]).unwrap();
    let err = Store::open(&cfg(tmp.path())).expect_err("must refuse");
    assert!(
        matches!(
            err,
            StoreError::Open { .. }
                | StoreError::Corrupt { .. }
                | StoreError::NotATallyStore { .. }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains(&tmp.path().display().to_string()));
}

#[test]
fn undecodable_batch_is_a_typed_error() {
    let tmp = tempfile::tempdir().unwrap();
    drop(Store::open(&cfg(tmp.path())).unwrap());
    {
        let db = sled_open_retrying(tmp.path());
        db.open_tree("id_batches")
            .unwrap()
            .insert(7u64.to_be_bytes(), &b"\x01\x00"[..])
            .unwrap();
        db.flush().unwrap();
    }
    let err = Store::open(&cfg(tmp.path())).expect_err("must refuse");
    match &err {
        StoreError::Corrupt { tree, key, .. } => {
            assert_eq!(*tree, "id_batches");
            assert!(key.contains("07"), "{key}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn offsets_never_go_backwards_through_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Store::open(&cfg(tmp.path())).unwrap();
    s.commit(&[batch("r", "t", 0, 0, 10, &["a"])]).unwrap();
    // A regression anywhere refuses the whole group commit.
    let err = s
        .commit(&[
            batch("r", "t", 1, 0, 4, &["x"]),
            batch("r", "t", 0, 5, 9, &["b"]),
        ])
        .expect_err("must refuse");
    assert!(
        matches!(
            err,
            StoreError::OffsetRegression {
                committed: 10,
                attempted: 9,
                partition: 0,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(s.offset("t", 0).unwrap().unwrap().next_offset, 10);
    assert_eq!(s.offset("t", 1).unwrap(), None);
    assert!(!s.contains(digest("r", "b")) && !s.contains(digest("r", "x")));
    // Two batches for one partition in one commit are checked in order.
    assert!(
        s.commit(&[
            batch("r", "t", 0, 10, 12, &[]),
            batch("r", "t", 0, 12, 11, &[])
        ])
        .is_err()
    );
    assert!(
        s.commit(&[
            batch("r", "t", 0, 10, 12, &[]),
            batch("r", "t", 0, 12, 15, &["c"])
        ])
        .is_ok()
    );
    assert_eq!(s.offset("t", 0).unwrap().unwrap().next_offset, 15);
    // Equal is fine (nothing new resolved); reset is explicit.
    s.commit(&[batch("r", "t", 0, 15, 15, &[])]).unwrap();
    s.set_offset("t", 0, 3).unwrap();
    assert_eq!(s.offset("t", 0).unwrap().unwrap().next_offset, 3);
    // Invalid batches are refused before touching anything.
    let mut bad = batch("r", "t", 0, 5, 4, &[]);
    assert!(matches!(
        s.commit(&[bad.clone()]),
        Err(StoreError::InvalidBatch { .. })
    ));
    bad.first_offset = 3;
    bad.keys.push("k".into());
    assert!(matches!(
        s.commit(&[bad]),
        Err(StoreError::InvalidBatch { .. })
    ));
}

#[test]
fn prune_removes_old_batches_and_their_digests() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let s = Store::open(&cfg(tmp.path())).unwrap();
        for i in 0..300 {
            let k = format!("old-{i}");
            s.commit(&[batch("r", "t", 0, i, i + 1, &[&k])]).unwrap();
        }
        // A wide gap: on a loaded machine the prune below may run well after
        // the new batch was committed, and must still see it as young.
        std::thread::sleep(Duration::from_millis(1500));
        s.commit(&[batch("r", "t", 0, 300, 302, &["new-1", "new-2"])])
            .unwrap();
        assert_eq!(
            s.prune_older_than(Duration::from_secs(3600))
                .unwrap()
                .batches,
            0
        );
        let st = s.prune_older_than(Duration::from_millis(1000)).unwrap();
        assert_eq!((st.batches, st.ids), (300, 300));
        assert_eq!(s.id_count(), 2);
        assert!(!s.contains(digest("r", "old-0")) && !s.contains(digest("r", "old-299")));
        assert!(s.contains(digest("r", "new-1")));
        assert_eq!(s.lookup("r", "old-5").unwrap(), None);
        // Offsets are untouched by prune.
        assert_eq!(s.offset("t", 0).unwrap().unwrap().next_offset, 302);
    }
    let s = Store::open(&cfg(tmp.path())).unwrap();
    assert_eq!(s.id_count(), 2);
    assert_eq!(s.batches().unwrap().len(), 1);
    assert!(!s.contains(digest("r", "old-7")));
}

#[test]
fn dead_letters_round_trip_binary_payloads() {
    let tmp = tempfile::tempdir().unwrap();
    let payload: Vec<u8> = (0..=255u8).rev().collect();
    {
        let s = Store::open(&cfg(tmp.path())).unwrap();
        let mut b = batch("usage", "t", 0, 0, 3, &["a"]);
        b.dead_letters = vec![dl(1, payload.clone()), dl(2, vec![0xc3, 0x28])];
        let st = s.commit(&[b]).unwrap();
        assert_eq!(st.dead_letters, 2);
    }
    let s = Store::open(&cfg(tmp.path())).unwrap();
    let dls = s.dead_letters().unwrap();
    assert_eq!(dls.len(), 2);
    assert_eq!(dls[0].1, dl(1, payload));
    assert_eq!(dls[1].1.payload.as_deref(), Some(&[0xc3, 0x28][..]));
    assert_eq!(s.dead_letter(dls[1].0).unwrap().unwrap().offset, 2);
    // Sequence numbers are shared with batches, never reused after reopen.
    let st = s.commit(&[CommitBatch {
        dead_letters: vec![dl(3, vec![])],
        ..batch("usage", "t", 0, 3, 4, &[])
    }]);
    st.unwrap();
    let seqs: Vec<u64> = s.dead_letters().unwrap().iter().map(|(q, _)| *q).collect();
    assert_eq!(seqs.len(), 3);
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(s.remove_dead_letters(&[seqs[0], 9999]).unwrap(), 1);
    assert_eq!(s.dead_letters().unwrap().len(), 2);
}

#[test]
fn replay_commit_records_keys_removes_and_rewrites_letters_atomically() {
    let tmp = tempfile::tempdir().unwrap();
    let (fixed, failing) = {
        let s = Store::open(&cfg(tmp.path())).unwrap();
        let mut b = batch("usage", "t", 0, 0, 10, &["old"]);
        b.dead_letters = vec![dl(1, b"a".to_vec()), dl(2, b"b".to_vec())];
        s.commit(&[b]).unwrap();
        let dls = s.dead_letters().unwrap();
        let (fixed, failing) = (dls[0].0, dls[1].0);
        let mut again = dls[1].1.clone();
        again.attempts += 1;
        again.reason = "still wrong".into();
        let st = s
            .commit_replay(&ReplayCommit {
                // "old" is already committed: recorded once, not twice.
                delivered: vec![batch("usage", "t", 0, 1, 2, &["new", "old"])],
                remove: vec![fixed],
                update: vec![(failing, again)],
            })
            .unwrap();
        assert_eq!((st.ids_written, st.duplicates_skipped), (1, 1));
        (fixed, failing)
    };
    let s = Store::open(&cfg(tmp.path())).unwrap();
    assert!(s.contains(digest("usage", "new")));
    assert!(s.dead_letter(fixed).unwrap().is_none());
    let left = s.dead_letter(failing).unwrap().unwrap();
    assert_eq!((left.attempts, left.reason.as_str()), (2, "still wrong"));
    // A replay never moves the partition offset.
    assert_eq!(s.offset("t", 0).unwrap().unwrap().next_offset, 10);
    // Sequences stay unique after a replay commit and reopen.
    s.commit(&[batch("usage", "t", 0, 10, 11, &["later"])])
        .unwrap();
    let seqs: Vec<u64> = s.batches().unwrap().iter().map(|b| b.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    assert!(!seqs.contains(&failing));
}

#[test]
fn lookup_finds_the_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Store::open(&cfg(tmp.path())).unwrap();
    s.commit(&[batch(
        "usage",
        "t",
        4,
        100,
        103,
        &["t1/s1/a", "t1/s1/b", "t1/s1/c"],
    )])
    .unwrap();
    s.commit(&[
        batch("usage", "t", 5, 7, 9, &["t1/s2/x"]),
        batch("other", "t", 6, 0, 1, &["t1/s1/b"]),
    ])
    .unwrap();
    let loc = s.lookup("usage", "t1/s1/b").unwrap().expect("found");
    assert_eq!(
        (
            loc.topic.as_str(),
            loc.partition,
            loc.first_offset,
            loc.next_offset
        ),
        ("t", 4, 100, 103)
    );
    assert_eq!((loc.position, loc.key.as_deref()), (1, Some("t1/s1/b")));
    assert!(loc.committed_at_ms > 0);
    let other = s.lookup("other", "t1/s1/b").unwrap().expect("found");
    assert_eq!((other.route.as_str(), other.partition), ("other", 6));
    assert_ne!(other.seq, loc.seq);
    assert_eq!(s.lookup("usage", "nope").unwrap(), None);
}

#[test]
fn concurrent_readers_and_group_commits() {
    let tmp = tempfile::tempdir().unwrap();
    let s = std::sync::Arc::new(Store::open(&cfg(tmp.path())).unwrap());
    let writers: Vec<_> = (0..4)
        .map(|p| {
            let s = s.clone();
            std::thread::spawn(move || {
                for i in 0..25i64 {
                    let keys: Vec<String> = (0..20).map(|j| format!("{p}-{i}-{j}")).collect();
                    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
                    s.commit(&[batch("r", "t", p, i * 20, i * 20 + 20, &refs)])
                        .unwrap();
                    assert!(s.contains(digest("r", &keys[0])));
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    assert_eq!(s.id_count(), 4 * 25 * 20);
    for p in 0..4 {
        assert_eq!(s.offset("t", p).unwrap().unwrap().next_offset, 500);
    }
}

/// sled releases its `db` file lock from background threads a moment after the
/// last handle drops; under a loaded test run an immediate re-open can lose
/// that race. Retry briefly instead of failing spuriously.
pub(super) fn sled_open_retrying(path: &std::path::Path) -> sled::Db {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match sled::open(path) {
            Ok(db) => return db,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("sled::open {}: {e}", path.display()),
        }
    }
}

/// Dedupe IDs and dead-lettered payloads are nobody else's business.
#[test]
fn store_is_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let check = |dir: &std::path::Path| {
        assert_eq!(mode(dir), 0o700, "{}", dir.display());
        let mut files = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_file() {
                files += 1;
                assert_eq!(mode(&e.path()), 0o600, "{}", e.path().display());
            }
        }
        // sled's conf, db, snapshot + our tally.lock
        assert!(files >= 3, "{files} files");
    };
    // Created by tally.
    let fresh = tmp.path().join("fresh");
    let store = Store::open(&cfg(&fresh)).unwrap();
    check(&fresh);
    assert!(fresh.join("tally.lock").exists());
    drop(store);
    // Made by the operator with a loose mode: tightened at open.
    let loose = tmp.path().join("loose");
    std::fs::create_dir(&loose).unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o755)).unwrap();
    let store = Store::open(&cfg(&loose)).unwrap();
    check(&loose);
    drop(store);
}

fn restore_step(
    keys: &[&str],
    committed_at_ms: i64,
    next_offset: Option<i64>,
    mark_at: i64,
) -> ChangelogRestore {
    let b = batch("usage", "t", 2, 0, next_offset.unwrap_or(0), keys);
    ChangelogRestore {
        route: "usage".into(),
        topic: "t".into(),
        partition: 2,
        batches: vec![b],
        committed_at_ms: vec![committed_at_ms],
        next_offset,
        mark: ChangelogMark {
            topic: "cl".into(),
            next_offset: mark_at,
        },
    }
}

#[test]
fn changelog_restore_adds_ids_moves_the_offset_forward_and_records_the_position() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Store::open(&cfg(tmp.path())).unwrap();
    assert_eq!(s.changelog_position("t", 2).unwrap(), None);
    let st = s
        .restore_changelog(&restore_step(&["a", "b"], 1_000, Some(40), 3))
        .unwrap();
    assert_eq!(st.ids_written, 2);
    assert!(s.contains(digest("usage", "a")) && s.contains(digest("usage", "b")));
    assert_eq!(s.offset("t", 2).unwrap().unwrap().next_offset, 40);
    let mark = s.changelog_position("t", 2).unwrap().unwrap();
    assert_eq!((mark.topic.as_str(), mark.next_offset), ("cl", 3));
    // The original commit time is kept (retention prunes by it).
    assert_eq!(s.batches().unwrap()[0].committed_at_ms, 1_000);

    // Applying the same records again is harmless; an older offset never
    // wins; the restore's position is recorded as it is.
    let st = s
        .restore_changelog(&restore_step(&["a", "b"], 1_000, Some(10), 2))
        .unwrap();
    assert_eq!((st.ids_written, st.duplicates_skipped), (0, 2));
    assert_eq!(s.offset("t", 2).unwrap().unwrap().next_offset, 40);
    let at = |s: &Store| s.changelog_position("t", 2).unwrap().unwrap().next_offset;
    assert_eq!(at(&s), 2);
    s.restore_changelog(&restore_step(&[], 0, None, 3)).unwrap();
    assert_eq!(at(&s), 3);
    assert_eq!(s.id_count(), 2);

    // Durable: IDs, offset and position survive a reopen.
    drop(s);
    let s = Store::open(&cfg(tmp.path())).unwrap();
    assert!(s.contains(digest("usage", "b")));
    assert_eq!(s.offset("t", 2).unwrap().unwrap().next_offset, 40);
    assert_eq!(
        s.changelog_position("t", 2).unwrap().unwrap().next_offset,
        3
    );
}

/// A prune of many chunks gives the writer lock up between them: a commit
/// from another thread completes while the prune is still running.
#[test]
fn a_prune_lets_a_commit_in_between_its_chunks() {
    let tmp = tempfile::tempdir().unwrap();
    let s = std::sync::Arc::new(Store::open(&cfg(tmp.path())).unwrap());
    // Three chunks' worth of batches committed long ago (a restore keeps
    // the commit time), one ID each.
    let old = 2 * api::PRUNE_CHUNK + 1;
    let keys: Vec<String> = (0..old).map(|i| format!("old-{i}")).collect();
    s.restore_changelog(&ChangelogRestore {
        route: "usage".into(),
        topic: "t".into(),
        partition: 2,
        batches: (0..old)
            .map(|i| batch("usage", "t", 2, i as i64, i as i64 + 1, &[&keys[i]]))
            .collect(),
        committed_at_ms: vec![1_000; old],
        next_offset: Some(old as i64),
        mark: ChangelogMark {
            topic: "cl".into(),
            next_offset: 1,
        },
    })
    .unwrap();
    let mut chunks = 0;
    let st = s
        .prune_older_than_with(Duration::from_secs(3600), |_| {
            chunks += 1;
            if chunks == 1 {
                let (tx, rx) = std::sync::mpsc::channel();
                let other = std::sync::Arc::clone(&s);
                std::thread::spawn(move || {
                    let r = other.commit(&[batch("usage", "t", 5, 0, 1, &["new-0"])]);
                    let _ = tx.send(r.map(|st| st.ids_written));
                });
                // Generous: a held lock would block until the prune ends,
                // which waits for this callback, so it would time out.
                let got = rx.recv_timeout(Duration::from_secs(60));
                assert!(matches!(got, Ok(Ok(1))), "commit during a prune: {got:?}");
            }
        })
        .unwrap();
    assert_eq!((st.batches, st.ids, chunks), (old, old, 3));
    assert_eq!(s.id_count(), 1);
    assert!(s.contains(digest("usage", "new-0")) && !s.contains(digest("usage", "old-0")));
    assert_eq!(s.offset("t", 5).unwrap().unwrap().next_offset, 1);
}

#[test]
fn a_commit_advances_the_changelog_position_only_after_a_restore() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Store::open(&cfg(tmp.path())).unwrap();
    // The commit's keys went to changelog offsets `at - 1` (one record).
    let with_mark = |first, next, keys: &[&str], at| CommitBatch {
        changelog: Some(ChangelogWrite {
            topic: "cl".into(),
            first_offset: at - 1,
            next_offset: at,
        }),
        ..batch("usage", "t", 2, first, next, keys)
    };
    // Never restored: the mark is not recorded (a start must read the whole changelog).
    s.commit(&[with_mark(0, 5, &["a"], 1)]).unwrap();
    assert_eq!(s.changelog_position("t", 2).unwrap(), None);
    s.restore_changelog(&restore_step(&[], 0, None, 1)).unwrap();
    s.commit(&[with_mark(5, 9, &["b"], 2)]).unwrap();
    assert_eq!(
        s.changelog_position("t", 2).unwrap().unwrap().next_offset,
        2
    );
    // A restore from a renamed changelog topic replaces the position.
    let mut other = restore_step(&[], 0, None, 7);
    other.mark.topic = "cl-2".into();
    s.restore_changelog(&other).unwrap();
    let mark = s.changelog_position("t", 2).unwrap().unwrap();
    assert_eq!((mark.topic.as_str(), mark.next_offset), ("cl-2", 7));
    // ... and commits that name the old topic leave it alone.
    s.commit(&[with_mark(9, 10, &["c"], 3)]).unwrap();
    assert_eq!(
        s.changelog_position("t", 2).unwrap().unwrap().next_offset,
        7
    );
}

/// Records another writer put into the changelog after our restore (a dlq
/// replay on another store, a cut-off member's last IDs) are not ours: a
/// commit whose records come after them leaves the position before them,
/// also when two batches of one partition are committed together.
#[test]
fn a_commit_leaves_the_changelog_position_before_another_writers_records() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Store::open(&cfg(tmp.path())).unwrap();
    let wrote = |first, next, keys: &[&str], at: (i64, i64)| CommitBatch {
        changelog: Some(ChangelogWrite {
            topic: "cl".into(),
            first_offset: at.0,
            next_offset: at.1,
        }),
        ..batch("usage", "t", 2, first, next, keys)
    };
    let at = |s: &Store| s.changelog_position("t", 2).unwrap().unwrap().next_offset;
    s.restore_changelog(&restore_step(&[], 0, None, 4)).unwrap();
    // Offset 4 is someone else's record.
    s.commit(&[wrote(0, 3, &["a"], (5, 6))]).unwrap();
    assert_eq!(at(&s), 4);
    s.commit(&[wrote(3, 4, &["b"], (6, 7))]).unwrap();
    assert_eq!(at(&s), 4, "still before the foreign record");
    // A restore reads from 4 and establishes the position again; then
    // consecutive commits, in one transaction too, move it.
    s.restore_changelog(&restore_step(&[], 0, None, 7)).unwrap();
    s.commit(&[wrote(4, 5, &["c"], (7, 8)), wrote(5, 6, &["d"], (8, 10))])
        .unwrap();
    assert_eq!(at(&s), 10);
}

#[test]
fn a_restore_refuses_batches_of_another_partition() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Store::open(&cfg(tmp.path())).unwrap();
    let mut r = restore_step(&["a"], 0, Some(1), 1);
    r.batches[0].partition = 3;
    let err = s.restore_changelog(&r).unwrap_err().to_string();
    assert!(err.contains("does not belong"), "{err}");
    let mut r = restore_step(&["a"], 0, Some(1), 1);
    r.committed_at_ms.clear();
    assert!(s.restore_changelog(&r).is_err());
    assert_eq!(s.id_count(), 0);
}
