//! Crash and recovery paths of the digest log (`digest_log.rs`,
//! `rebuild.rs`) and the schema 1 → 2 migration (`migrate.rs`): torn
//! appends, a lost or damaged log, prune leftovers, SIGKILL during commits in
//! a loop, an old store written by the previous code.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::digest_log::{DIGESTS, DIR, KEYS, RECORD};
use super::*;

fn cfg(dir: &Path) -> StoreConfig {
    StoreConfig {
        path: dir.to_path_buf(),
        cache_capacity_bytes: 8 << 20,
    }
}

fn keys_for(p: i32, from: i64, to: i64) -> Vec<String> {
    (from..to)
        .map(|o| format!("tenant/sub-{p}/k-{p}-{o}"))
        .collect()
}

fn batch(p: i32, from: i64, to: i64) -> CommitBatch {
    let keys = keys_for(p, from, to);
    CommitBatch {
        route: "usage".into(),
        topic: "t".into(),
        partition: p,
        first_offset: from,
        next_offset: to,
        digests: keys.iter().map(|k| digest("usage", k)).collect(),
        keys,
        dead_letters: vec![],
        changelog: None,
    }
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    segments_of(dir, DIR)
}

/// Every key of offsets `0..to` on partitions `0..parts` is stored, and nothing else.
fn assert_holds(s: &Store, parts: i32, to: i64) {
    for p in 0..parts {
        for k in keys_for(p, 0, to) {
            assert!(s.contains(digest("usage", &k)), "{k} missing");
        }
        assert!(!s.contains(digest("usage", &format!("tenant/sub-{p}/k-{p}-{to}"))));
    }
    assert_eq!(s.id_count(), parts as usize * to as usize);
}

/// Commit 10 rounds of 4 partitions x 30 IDs (1,200 IDs, several segments).
fn fill(dir: &Path) -> Store {
    let s = Store::open(&cfg(dir)).unwrap();
    for round in 0..10 {
        let bs: Vec<_> = (0..4)
            .map(|p| batch(p, round * 30, round * 30 + 30))
            .collect();
        s.commit(&bs).unwrap();
    }
    s
}

#[test]
fn commits_rotate_segments_and_reopen_reads_them() {
    let tmp = tempfile::tempdir().unwrap();
    drop(fill(tmp.path()));
    assert!(segments(tmp.path()).len() >= 1200 / (DIGESTS.segment_records as usize + 120));
    let s = Store::open(&cfg(tmp.path())).unwrap();
    assert_holds(&s, 4, 300);
    assert_eq!(s.mended_at_open(), 0);
    let loc = s.lookup("usage", "tenant/sub-2/k-2-77").unwrap().unwrap();
    assert_eq!(loc.partition, 2);
    assert_eq!(loc.key.as_deref(), Some("tenant/sub-2/k-2-77"));
    assert!(loc.first_offset <= 77 && 77 < loc.next_offset);
}

/// A commit whose records reached the log but whose transaction never
/// happened (killed in between): its bytes past the recorded end are cut
/// off, and the next commit overwrites that place.
#[test]
fn unfinished_append_is_cut_off() {
    let tmp = tempfile::tempdir().unwrap();
    drop(fill(tmp.path()));
    let last = segments(tmp.path()).pop().unwrap();
    let len = std::fs::metadata(&last).unwrap().len();
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&last)
            .unwrap();
        let mut junk = Vec::new();
        digest_log::pack(digest("usage", "never-committed"), &mut junk);
        f.write_all(&junk).unwrap();
        f.write_all(&[0xab; 7]).unwrap();
    }
    let s = Store::open(&cfg(tmp.path())).unwrap();
    assert_eq!(std::fs::metadata(&last).unwrap().len(), len);
    assert!(!s.contains(digest("usage", "never-committed")));
    assert_holds(&s, 4, 300);
    s.commit(&[
        batch(0, 300, 301),
        batch(1, 300, 301),
        batch(2, 300, 301),
        batch(3, 300, 301),
    ])
    .unwrap();
    drop(s);
    let s = Store::open(&cfg(tmp.path())).unwrap();
    assert_holds(&s, 4, 301);
}

/// Power loss: records committed after the last log sync never reached the
/// disk (here: the last segment is cut short and the one before zeroed).
/// The open recomputes them from the keys stored in the same transaction.
#[test]
fn lost_unsynced_records_are_recomputed_from_keys() {
    let tmp = tempfile::tempdir().unwrap();
    drop(fill(tmp.path())); // no Store::flush: the tail stays unsynced
    let segs = segments(tmp.path());
    let last = segs.last().unwrap();
    let len = std::fs::metadata(last).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(last)
        .unwrap()
        .set_len(len / 2 / RECORD as u64 * RECORD as u64)
        .unwrap();
    let s = Store::open(&cfg(tmp.path())).unwrap();
    assert!(s.mended_at_open() > 0);
    assert_holds(&s, 4, 300);
    drop(s);
    // Mended and synced: the next open has nothing to do.
    let s = Store::open(&cfg(tmp.path())).unwrap();
    assert_eq!(s.mended_at_open(), 0);
    assert_holds(&s, 4, 300);
}

/// Bit rot or a foreign file in the synced part fails the segment's CRC;
/// the open recomputes the segment from the keys instead of loading it.
#[test]
fn damaged_synced_segment_is_recomputed_from_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let s = fill(tmp.path());
    s.flush().unwrap(); // everything synced: checked by CRC, not headers
    drop(s);
    let first = segments(tmp.path()).remove(0);
    let mut bytes = std::fs::read(&first).unwrap();
    bytes[RECORD * 3 + 5] ^= 0x40;
    std::fs::write(&first, &bytes).unwrap();
    let s = Store::open(&cfg(tmp.path())).unwrap();
    assert!(s.mended_at_open() > 0);
    assert_holds(&s, 4, 300);
    drop(s);
    let s = Store::open(&cfg(tmp.path())).unwrap();
    assert_eq!(s.mended_at_open(), 0);
    assert_holds(&s, 4, 300);
}

/// An operator who copied only sled's files: the whole log is rebuilt.
#[test]
fn missing_digest_directory_is_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let s = fill(tmp.path());
    s.flush().unwrap();
    drop(s);
    std::fs::remove_dir_all(tmp.path().join(DIR)).unwrap();
    let s = Store::open(&cfg(tmp.path())).unwrap();
    assert_eq!(s.mended_at_open(), 1200);
    assert_holds(&s, 4, 300);
    drop(s);
    let s = Store::open(&cfg(tmp.path())).unwrap();
    assert_eq!(s.mended_at_open(), 0);
    assert_holds(&s, 4, 300);
}

/// If the keys cannot give back what a header recorded, that is corruption,
/// reported as such — never an empty or partial index.
#[test]
fn unmendable_log_is_an_error_not_a_smaller_index() {
    let tmp = tempfile::tempdir().unwrap();
    let s = fill(tmp.path());
    s.flush().unwrap();
    drop(s);
    std::fs::remove_dir_all(tmp.path().join(DIR)).unwrap();
    // ... and the keys damaged too.
    let first_keys = std::fs::read_dir(tmp.path().join(KEYS.dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .min()
        .unwrap();
    let mut bytes = std::fs::read(&first_keys).unwrap();
    bytes[40] ^= 0x11;
    std::fs::write(&first_keys, &bytes).unwrap();
    let err = Store::open(&cfg(tmp.path())).expect_err("must refuse");
    assert!(
        matches!(
            err,
            StoreError::Corrupt {
                tree: "id_batches",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("key log"), "{err}");
}

/// Keys are read back from the key log and checked: a damaged batch of keys
/// is an error naming it, not wrong keys.
#[test]
fn keys_round_trip_through_the_key_log_and_damage_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    drop(fill(tmp.path()));
    assert!(
        segments_of(tmp.path(), KEYS.dir).len() > 1,
        "key log rotated"
    );
    let s = Store::open(&cfg(tmp.path())).unwrap();
    let bs = s.batches().unwrap();
    assert_eq!(bs.len(), 40);
    for b in &bs {
        let ks = s.batch_keys(b.seq).unwrap().unwrap();
        assert_eq!(ks, keys_for(b.partition, b.first_offset, b.next_offset));
    }
    drop(s);
    let last = segments_of(tmp.path(), KEYS.dir).pop().unwrap();
    let mut bytes = std::fs::read(&last).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0x01;
    std::fs::write(&last, &bytes).unwrap();
    let s = Store::open(&cfg(tmp.path())).unwrap();
    let newest = s.batches().unwrap().pop().unwrap();
    let err = s.batch_keys(newest.seq).expect_err("damaged keys");
    assert!(err.to_string().contains("checksum"), "{err}");
    // Dedupe does not depend on the key log.
    assert_holds(&s, 4, 300);
}

fn segments_of(dir: &Path, sub: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join(sub))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

/// Prune drops whole segments once they are entirely before the live part;
/// a leftover file from a crash between the prune and the removal goes at
/// the next open.
#[test]
fn prune_drops_old_segments_and_leftovers_go_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let s = fill(tmp.path());
    let before = segments(tmp.path());
    std::thread::sleep(Duration::from_millis(1200));
    s.commit(&[batch(0, 300, 310)]).unwrap();
    let st = s.prune_older_than(Duration::from_millis(600)).unwrap();
    assert_eq!((st.batches, st.ids), (40, 1200));
    let after = segments(tmp.path());
    assert!(after.len() < before.len(), "{before:?} -> {after:?}");
    assert!(!s.contains(digest("usage", "tenant/sub-0/k-0-5")));
    assert!(s.contains(digest("usage", "tenant/sub-0/k-0-305")));
    drop(s);
    // A segment the prune dropped, as if the process died before removing it.
    std::fs::write(&before[0], vec![0u8; RECORD * 4]).unwrap();
    let s = Store::open(&cfg(tmp.path())).unwrap();
    assert!(!before[0].exists());
    assert_eq!(s.id_count(), 10);
    assert!(s.contains(digest("usage", "tenant/sub-0/k-0-309")));
    assert!(!s.contains(digest("usage", "tenant/sub-0/k-0-299")));
}

/// The schema-1 store in testdata/ was written by tally before the digest
/// log (6 batches of 50 keys over 2 partitions, one dead letter). It opens
/// migrated, with nothing lost.
#[test]
fn schema_1_store_from_the_previous_layout_is_migrated() {
    let tmp = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store/testdata/store-v1");
    for f in ["conf", "db"] {
        std::fs::copy(src.join(f), tmp.path().join(f)).unwrap();
    }
    let check = |s: &Store, ids: usize| {
        assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(s.id_count(), ids);
        for b in 0..6u64 {
            for i in [0u64, 49] {
                let k = format!(
                    "0d96d663-00c1-4ff7-8324-d97cc551d6b3/sub-{:04}/trk-{b}-{i}",
                    i % 7
                );
                let loc = s.lookup("usage", &k).unwrap().expect("migrated key");
                assert_eq!(loc.key.as_deref(), Some(k.as_str()));
                assert_eq!(loc.partition, (b % 2) as i32);
            }
        }
        assert!(!s.contains(digest("usage", "trk-9-9")));
        assert_eq!(
            s.offset("stream.usagemetrics", 0)
                .unwrap()
                .unwrap()
                .next_offset,
            180
        );
        assert_eq!(
            s.offset("stream.usagemetrics", 1)
                .unwrap()
                .unwrap()
                .next_offset,
            180
        );
        assert_eq!(s.dead_letters().unwrap().len(), 1);
    };
    {
        let s = Store::open(&cfg(tmp.path())).unwrap();
        check(&s, 300);
        assert_eq!(s.batches().unwrap().len(), 6);
        // New commits continue the sequence after the migrated batches.
        s.commit(&[batch(0, 0, 5)]).unwrap();
    }
    let s = Store::open(&cfg(tmp.path())).unwrap();
    check(&s, 305);
    let seqs: Vec<u64> = s.batches().unwrap().iter().map(|b| b.seq).collect();
    assert_eq!(seqs.len(), 7);
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
}

/// Write a schema-1 store the way the previous code did: digests inside
/// the `id_batches` values, schema_version 1.
fn write_schema_1(dir: &Path, batches: u64, per: u64) {
    drop(Store::open(&cfg(dir)).unwrap());
    let db = super::tests::sled_open_retrying(dir);
    let meta = db.open_tree("meta").unwrap();
    meta.insert("schema_version", &1u32.to_be_bytes()).unwrap();
    meta.remove(keys::META_DIGEST_LOG).unwrap();
    meta.remove(keys::META_KEY_LOG).unwrap();
    let ids = db.open_tree("id_batches").unwrap();
    let kt = db.open_tree("id_keys").unwrap();
    let offsets = db.open_tree("offsets").unwrap();
    for seq in 0..batches {
        let ks = keys_for(0, (seq * per) as i64, ((seq + 1) * per) as i64);
        let ds: Vec<u128> = ks.iter().map(|k| digest("usage", k)).collect();
        let info = BatchInfo {
            seq,
            route: "usage".into(),
            topic: "t".into(),
            partition: 0,
            first_offset: (seq * per) as i64,
            next_offset: ((seq + 1) * per) as i64,
            committed_at_ms: now_ms(),
            count: ds.len() as u32,
        };
        ids.insert(keys::seq_key(seq), batch::encode_batch_v1(&info, &ds))
            .unwrap();
        kt.insert(keys::seq_key(seq), batch::encode_keys(&ks))
            .unwrap();
    }
    let off = keys::OffsetEntry {
        next_offset: (batches * per) as i64,
        updated_at_ms: 1,
    };
    offsets
        .insert(
            keys::offset_key("t", 0),
            &keys::encode_offset_value(&off)[..],
        )
        .unwrap();
    meta.insert(
        keys::META_COUNTERS,
        &keys::encode_counters(&keys::Counters {
            next_seq: batches,
            digest_count: batches * per,
        })[..],
    )
    .unwrap();
    db.flush().unwrap();
}

/// A migration stopped after its first chunk (as by a crash) carries on at
/// the next open, and what it did first is not done twice.
#[test]
fn interrupted_migration_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    write_schema_1(tmp.path(), 12, 25);
    {
        let _lock = lock::DirLock::acquire(tmp.path()).unwrap();
        let db = super::tests::sled_open_retrying(tmp.path());
        let trees = api::Trees {
            meta: db.open_tree("meta").unwrap(),
            offsets: db.open_tree("offsets").unwrap(),
            id_batches: db.open_tree("id_batches").unwrap(),
            id_keys: db.open_tree("id_keys").unwrap(),
            dead_letters: db.open_tree("dead_letters").unwrap(),
            changelog_positions: db.open_tree("changelog_positions").unwrap(),
        };
        migrate::begin(tmp.path(), &db, &trees).unwrap();
        let done = migrate::run(tmp.path(), &db, &trees, 0, 100, Some(1)).unwrap();
        assert_eq!((done.batches, done.ids, done.finished), (4, 100, false));
        assert_eq!(migrate::pending(tmp.path(), &trees).unwrap(), Some(4));
        // The half-migrated store is schema 2 already: an older tally refuses it.
        let v = trees.meta.get("schema_version").unwrap().unwrap();
        assert_eq!(
            u32::from_be_bytes(v.as_ref().try_into().unwrap()),
            SCHEMA_VERSION
        );
    }
    let s = Store::open(&cfg(tmp.path())).unwrap();
    assert_holds(&s, 1, 300);
    assert_eq!(s.batches().unwrap().len(), 12);
    assert_eq!(s.offset("t", 0).unwrap().unwrap().next_offset, 300);
    drop(s);
    let s = Store::open(&cfg(tmp.path())).unwrap();
    assert_holds(&s, 1, 300);
}

/// A schema-1 batch whose keys are gone from `id_keys` still migrates: its
/// digests keep deduping, and only its keys are reported missing.
#[test]
fn schema_1_batch_without_keys_migrates_its_digests() {
    let tmp = tempfile::tempdir().unwrap();
    write_schema_1(tmp.path(), 3, 20);
    {
        let db = super::tests::sled_open_retrying(tmp.path());
        let kt = db.open_tree("id_keys").unwrap();
        kt.remove(keys::seq_key(1)).unwrap();
        db.flush().unwrap();
    }
    let s = Store::open(&cfg(tmp.path())).unwrap();
    assert_holds(&s, 1, 60);
    assert_eq!(s.batch_keys(1).unwrap(), None);
    assert_eq!(
        s.batch_keys(2).unwrap().unwrap(),
        keys_for(0, 40, 60),
        "the batch after it keeps its keys"
    );
    // Reopened, and after new commits, the same.
    s.commit(&[batch(0, 60, 70)]).unwrap();
    drop(s);
    let s = Store::open(&cfg(tmp.path())).unwrap();
    assert_holds(&s, 1, 70);
    assert_eq!(s.batch_keys(1).unwrap(), None);
}

/// Restored IDs take the committed IDs' way: their digests and keys are in
/// the logs, so keys read back and a lost digest log is recomputed.
#[test]
fn restored_ids_land_in_the_digest_and_key_logs() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Store::open(&cfg(tmp.path())).unwrap();
    let mut round = 0;
    while s.offset("t", 3).unwrap().map_or(0, |e| e.next_offset) < 300 {
        s.restore_changelog(&restore_step(&s, round)).unwrap();
        round += 1;
    }
    let to = s.offset("t", 3).unwrap().unwrap().next_offset;
    assert!(segments(tmp.path()).len() > 1, "digest log rotated");
    for b in s.batches().unwrap() {
        assert_eq!(
            s.batch_keys(b.seq).unwrap().unwrap(),
            keys_for(3, b.first_offset, b.next_offset)
        );
    }
    s.flush().unwrap();
    drop(s);
    std::fs::remove_dir_all(tmp.path().join(DIR)).unwrap();
    let s = Store::open(&cfg(tmp.path())).unwrap();
    assert_eq!(s.mended_at_open(), to as u64);
    for k in keys_for(3, 0, to) {
        assert!(s.contains(digest("usage", &k)), "{k} lost");
    }
    assert_eq!(s.id_count(), to as usize);
    assert_eq!(
        s.changelog_position("t", 3).unwrap().unwrap().next_offset,
        to
    );
}

const CHILD_ENV: &str = "TALLY_STORE_CRASH_CHILD";

/// Run by `sigkill_during_commits_never_splits_ids_from_offsets` as a child
/// process: commit (and sometimes flush or prune) until killed.
#[test]
#[ignore = "child process of sigkill_during_commits_never_splits_ids_from_offsets"]
fn crash_child_commit_loop() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (dir, prune) = spec.split_once('|').unwrap();
    let s = Store::open(&cfg(Path::new(dir))).unwrap();
    let mut round = 0u64;
    loop {
        let mut bs = Vec::new();
        for p in 0..3 {
            let from = s.offset("t", p).unwrap().map_or(0, |e| e.next_offset);
            let n = 1 + (round as i64 * 7 + p as i64) % 40;
            bs.push(batch(p, from, from + n));
        }
        s.commit(&bs).unwrap();
        if prune == "restore" {
            s.restore_changelog(&restore_step(&s, round)).unwrap();
        }
        round += 1;
        if round.is_multiple_of(17) {
            s.flush().unwrap();
        }
        // A close mid-run writes the index snapshot, so kills land before,
        // during and after snapshot writes too.
        if round.is_multiple_of(23) {
            s.close().unwrap();
        }
        if prune == "prune" && round.is_multiple_of(5) {
            s.prune_older_than(Duration::from_millis(30)).unwrap();
        }
    }
}

/// The crash child's changelog restore for partition 3: its next IDs, the
/// offset they prove delivered, and a changelog position equal to that
/// offset (so a torn restore shows as the two disagreeing).
fn restore_step(s: &Store, round: u64) -> ChangelogRestore {
    let from = s.offset("t", 3).unwrap().map_or(0, |e| e.next_offset);
    let to = from + 1 + (round as i64 * 5) % 30;
    ChangelogRestore {
        route: "usage".into(),
        topic: "t".into(),
        partition: 3,
        batches: vec![batch(3, from, to)],
        committed_at_ms: vec![now_ms()],
        next_offset: Some(to),
        mark: ChangelogMark {
            topic: "cl".into(),
            next_offset: to,
        },
    }
}

/// SIGKILL a process that commits in a loop, many times, at random moments;
/// after each kill the store must be exactly consistent: every ID below a
/// partition's committed offset is there (or was pruned with its whole
/// batch), none at or above it, and the index holds exactly the retained
/// batches' keys.
#[test]
fn sigkill_during_commits_never_splits_ids_from_offsets() {
    let exe = std::env::current_exe().unwrap();
    for prune in ["keep", "prune", "restore"] {
        let tmp = tempfile::tempdir().unwrap();
        let mut rng = fastrand::Rng::with_seed(now_ms() as u64);
        let mut kills = 0;
        let mut from_snapshot = 0;
        for _ in 0..8 {
            let mut child = std::process::Command::new(&exe)
                .args([
                    "store::log_tests::crash_child_commit_loop",
                    "--exact",
                    "--ignored",
                    "--nocapture",
                ])
                .env(CHILD_ENV, format!("{}|{prune}", tmp.path().display()))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(rng.u64(150..600)));
            if child.try_wait().unwrap().is_none() {
                kills += 1;
            }
            child.kill().unwrap();
            child.wait().unwrap();
            from_snapshot += check_consistent(tmp.path(), prune == "prune") as usize;
        }
        assert!(kills >= 6, "the child exited early {} times", 8 - kills);
        // Without prunes every open after the first has a snapshot to use.
        if prune != "prune" {
            assert!(
                from_snapshot >= 4,
                "{prune}: {from_snapshot} opens used the snapshot"
            );
        }
        // The kills landed in real work, not before the first commit.
        let s = Store::open(&cfg(tmp.path())).unwrap();
        let done = s.offset("t", 0).unwrap().map_or(0, |e| e.next_offset);
        eprintln!(
            "{prune}: {kills} kills, {from_snapshot} opens from the snapshot, partition 0 committed to {done}"
        );
        assert!(done > 200, "only {done} offsets committed");
        if prune == "restore" {
            let restored = s.offset("t", 3).unwrap().map_or(0, |e| e.next_offset);
            assert!(restored > 200, "only {restored} offsets restored");
        }
    }
}

/// Returns whether the open loaded the index snapshot.
fn check_consistent(dir: &Path, pruned: bool) -> bool {
    let s = Store::open(&cfg(dir)).unwrap();
    // Restored IDs, offset and changelog position land together or not at all.
    let restored = s.offset("t", 3).unwrap().map(|e| e.next_offset);
    let mark = s.changelog_position("t", 3).unwrap().map(|m| m.next_offset);
    assert_eq!(restored, mark, "restore split its offset from its position");
    let restored = restored.unwrap_or(0);
    for k in keys_for(3, 0, restored) {
        assert!(s.contains(digest("usage", &k)), "restored {k} lost");
    }
    for k in keys_for(3, restored, restored + 30) {
        assert!(
            !s.contains(digest("usage", &k)),
            "{k} restored past the offset"
        );
    }
    let mut retained = 0usize;
    for b in s.batches().unwrap() {
        let ks = s.batch_keys(b.seq).unwrap().unwrap();
        assert_eq!(ks.len(), b.count as usize);
        for k in &ks {
            assert!(
                s.contains(digest("usage", k)),
                "{k} of batch {} not in the index",
                b.seq
            );
        }
        let committed = s.offset("t", b.partition).unwrap().unwrap().next_offset;
        assert!(
            b.next_offset <= committed,
            "batch past its partition's offset"
        );
        retained += ks.len();
    }
    assert_eq!(
        s.id_count(),
        retained,
        "index holds IDs of no retained batch"
    );
    for p in 0..3 {
        let committed = s.offset("t", p).unwrap().map_or(0, |e| e.next_offset);
        for k in keys_for(p, committed, committed + 40) {
            assert!(
                !s.contains(digest("usage", &k)),
                "{k} stored past the offset"
            );
        }
        if !pruned {
            for k in keys_for(p, 0, committed) {
                assert!(s.contains(digest("usage", &k)), "{k} lost below the offset");
            }
        }
    }
    // The next child opens from this snapshot (or from a later one its
    // own closes write), then is killed.
    s.close().unwrap();
    s.opened_from_snapshot()
}

/// A copy of the store directory (sled's files and both logs), for
/// opening the same store with and without its snapshot.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else if e.file_name() != "tally.lock" {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

fn snapshot_file(dir: &Path) -> PathBuf {
    dir.join(super::snapshot::FILE)
}

/// Every key of `0..to` on 4 partitions, plus misses: the answers of `a`
/// and `b` must agree on each.
fn assert_same_answers(a: &Store, b: &Store, to: i64) {
    for p in 0..4 {
        for k in keys_for(p, 0, to + 50) {
            let d = digest("usage", &k);
            assert_eq!(a.contains(d), b.contains(d), "{k}");
        }
    }
    assert_eq!(a.id_count(), b.id_count());
}

/// A clean close writes the snapshot; the next open loads it and reads
/// only the records committed after it from the log, and answers every
/// `contains` exactly as an open that rebuilds from the log alone.
#[test]
fn an_open_from_the_snapshot_answers_like_a_rebuild() {
    let tmp = tempfile::tempdir().unwrap();
    let s = fill(tmp.path());
    s.close().unwrap();
    assert!(snapshot_file(tmp.path()).exists());
    // Records after the snapshot's prefix: a tail read from the log.
    s.commit(&(0..4).map(|p| batch(p, 300, 340)).collect::<Vec<_>>())
        .unwrap();
    drop(s);
    let plain = tempfile::tempdir().unwrap();
    copy_dir(tmp.path(), plain.path());
    std::fs::remove_file(snapshot_file(plain.path())).unwrap();

    let a = Store::open(&cfg(tmp.path())).unwrap();
    let b = Store::open(&cfg(plain.path())).unwrap();
    assert!(a.opened_from_snapshot());
    assert!(!b.opened_from_snapshot());
    assert_holds(&a, 4, 340);
    assert_same_answers(&a, &b, 340);
    // Both keep working the same after the open.
    for s in [&a, &b] {
        s.commit(&(0..4).map(|p| batch(p, 340, 345)).collect::<Vec<_>>())
            .unwrap();
        assert_holds(s, 4, 345);
    }
    // A close with nothing new keeps the snapshot as it is.
    a.close().unwrap();
    let written = std::fs::metadata(snapshot_file(tmp.path()))
        .unwrap()
        .modified()
        .unwrap();
    a.close().unwrap();
    let again = std::fs::metadata(snapshot_file(tmp.path()))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(written, again);
    drop(a);
    let a = Store::open(&cfg(tmp.path())).unwrap();
    assert!(a.opened_from_snapshot());
    assert_same_answers(&a, &b, 345);
}

/// A prune after the snapshot was written (retention, `tally ids prune`
/// without a close after it) leaves a snapshot holding pruned digests: it
/// is not used.
#[test]
fn a_snapshot_from_before_a_prune_is_not_used() {
    let tmp = tempfile::tempdir().unwrap();
    let s = fill(tmp.path());
    s.close().unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    s.commit(&[batch(0, 300, 310)]).unwrap();
    assert_eq!(
        s.prune_older_than(Duration::from_millis(600)).unwrap().ids,
        1200
    );
    drop(s);
    let s = Store::open(&cfg(tmp.path())).unwrap();
    assert!(!s.opened_from_snapshot());
    assert_eq!(s.id_count(), 10);
    assert!(!s.contains(digest("usage", "tenant/sub-0/k-0-5")));
    // The close writes one of the pruned index; the next open uses it.
    s.close().unwrap();
    drop(s);
    let s = Store::open(&cfg(tmp.path())).unwrap();
    assert!(s.opened_from_snapshot());
    assert_eq!(s.id_count(), 10);
    assert!(s.contains(digest("usage", "tenant/sub-0/k-0-305")));
    assert!(!s.contains(digest("usage", "tenant/sub-0/k-0-5")));
    // Pruned to nothing: the snapshot goes too.
    std::thread::sleep(Duration::from_millis(700));
    s.prune_older_than(Duration::from_millis(600)).unwrap();
    s.close().unwrap();
    assert!(!snapshot_file(tmp.path()).exists());
}

/// A store put back from a backup taken before the snapshot was written
/// (its log ends before the snapshot's prefix), or another store's
/// snapshot copied in: not used, and the rebuilt index is the store's own.
#[test]
fn a_snapshot_of_a_longer_log_or_another_store_is_not_used() {
    let tmp = tempfile::tempdir().unwrap();
    let backup = tempfile::tempdir().unwrap();
    let s = fill(tmp.path());
    s.flush().unwrap();
    copy_dir(tmp.path(), backup.path());
    s.commit(&(0..4).map(|p| batch(p, 300, 320)).collect::<Vec<_>>())
        .unwrap();
    s.close().unwrap();
    drop(s);
    std::fs::copy(snapshot_file(tmp.path()), snapshot_file(backup.path())).unwrap();
    let s = Store::open(&cfg(backup.path())).unwrap();
    assert!(!s.opened_from_snapshot());
    assert_holds(&s, 4, 300);
    drop(s);

    // Same commits, another store (another creation time).
    std::thread::sleep(Duration::from_millis(5));
    let other = tempfile::tempdir().unwrap();
    let o = fill(other.path());
    o.commit(&(0..4).map(|p| batch(p, 300, 320)).collect::<Vec<_>>())
        .unwrap();
    drop(o);
    std::fs::copy(snapshot_file(tmp.path()), snapshot_file(other.path())).unwrap();
    let o = Store::open(&cfg(other.path())).unwrap();
    assert!(!o.opened_from_snapshot());
    assert_holds(&o, 4, 320);
}

/// Power loss after a clean close and more commits: the unsynced tail is
/// lost and mended from the keys, a covered segment rots too. The snapshot
/// still holds its prefix (mending restores what the headers say was
/// committed), and the open checks and mends the log as without one.
#[test]
fn the_log_is_checked_and_mended_under_a_snapshot_too() {
    let tmp = tempfile::tempdir().unwrap();
    let s = fill(tmp.path());
    s.close().unwrap();
    s.commit(&(0..4).map(|p| batch(p, 300, 330)).collect::<Vec<_>>())
        .unwrap();
    drop(s); // no flush: the tail stays unsynced
    let segs = segments(tmp.path());
    let last = segs.last().unwrap();
    let len = std::fs::metadata(last).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(last)
        .unwrap()
        .set_len(len / 2 / RECORD as u64 * RECORD as u64)
        .unwrap();
    let mut bytes = std::fs::read(&segs[0]).unwrap();
    bytes[RECORD * 3 + 5] ^= 0x40;
    std::fs::write(&segs[0], &bytes).unwrap();
    let s = Store::open(&cfg(tmp.path())).unwrap();
    assert!(s.opened_from_snapshot());
    assert!(s.mended_at_open() > 0);
    assert_holds(&s, 4, 330);
    drop(s);
    // Mended: a rebuild from the log alone agrees.
    std::fs::remove_file(snapshot_file(tmp.path())).unwrap();
    let s = Store::open(&cfg(tmp.path())).unwrap();
    assert_eq!(s.mended_at_open(), 0);
    assert_holds(&s, 4, 330);
}

/// A store put back from a backup, with a later snapshot left beside it:
/// the first open rejects the snapshot (it covers more than the log holds)
/// and must not leave it there, or it can pass later. Here the restored
/// store commits other IDs where the original committed A, then the same
/// last batch B (same sequence, place and checksum), and is killed before a
/// clean close: the old snapshot's header now matches, and loading it would
/// skip A's IDs (never committed here: lost) and miss C's (sent twice).
#[test]
fn a_rejected_snapshot_cannot_pass_later() {
    let tmp = tempfile::tempdir().unwrap();
    let backup = tempfile::tempdir().unwrap();
    let s = fill(tmp.path());
    s.flush().unwrap();
    copy_dir(tmp.path(), backup.path());
    s.commit(&[batch(1, 300, 310)]).unwrap(); // A
    s.commit(&[batch(0, 300, 310)]).unwrap(); // B
    s.close().unwrap();
    drop(s);
    std::fs::copy(snapshot_file(tmp.path()), snapshot_file(backup.path())).unwrap();

    let s = Store::open(&cfg(backup.path())).unwrap();
    assert!(!s.opened_from_snapshot());
    s.commit(&[batch(2, 300, 310)]).unwrap(); // C, where A was
    s.commit(&[batch(0, 300, 310)]).unwrap(); // B again
    drop(s); // killed: no close, no snapshot of its own

    let s = Store::open(&cfg(backup.path())).unwrap();
    assert!(!s.opened_from_snapshot());
    for k in keys_for(2, 300, 310) {
        assert!(s.contains(digest("usage", &k)), "{k} committed, missing");
    }
    for k in keys_for(1, 300, 310) {
        assert!(!s.contains(digest("usage", &k)), "{k} never committed here");
    }
    assert_eq!(s.id_count(), 1220);
}

/// A store copied to run a second instance (same `created_at`) that then
/// diverged: the same last batch (same sequence, place, checksum) after
/// other IDs. The copy's snapshot put into the original matches its header;
/// the records before that batch differ, and the open must see it.
#[test]
fn a_snapshot_of_a_diverged_copy_is_not_used() {
    let tmp = tempfile::tempdir().unwrap();
    let copy = tempfile::tempdir().unwrap();
    let s = fill(tmp.path());
    s.flush().unwrap();
    copy_dir(tmp.path(), copy.path());
    s.commit(&[batch(1, 300, 310)]).unwrap();
    s.commit(&[batch(0, 300, 310)]).unwrap();
    drop(s);
    let c = Store::open(&cfg(copy.path())).unwrap();
    c.commit(&[batch(2, 300, 310)]).unwrap();
    c.commit(&[batch(0, 300, 310)]).unwrap();
    c.close().unwrap();
    drop(c);
    std::fs::copy(snapshot_file(copy.path()), snapshot_file(tmp.path())).unwrap();

    let s = Store::open(&cfg(tmp.path())).unwrap();
    assert!(!s.opened_from_snapshot());
    for k in keys_for(1, 300, 310) {
        assert!(s.contains(digest("usage", &k)), "{k} committed, missing");
    }
    for k in keys_for(2, 300, 310) {
        assert!(!s.contains(digest("usage", &k)), "{k} never committed here");
    }
    assert_eq!(s.id_count(), 1220);
    assert!(!snapshot_file(tmp.path()).exists());
}

/// A snapshot whose header is the store's own but whose index is not what
/// the log holds — one digest more (never committed: it would be skipped),
/// or one swapped for another (the committed one would be sent again) —
/// is not used, and is removed.
#[test]
fn a_snapshot_whose_index_differs_from_the_log_is_not_used() {
    let tmp = tempfile::tempdir().unwrap();
    let s = fill(tmp.path());
    s.close().unwrap();
    drop(s);
    let good = std::fs::read(snapshot_file(tmp.path())).unwrap();
    let stranger = digest("usage", "tenant/never/committed");
    let committed = digest("usage", "tenant/sub-3/k-3-17");
    for swap in [false, true] {
        std::fs::write(snapshot_file(tmp.path()), &good).unwrap();
        let (mut index, covers) = match super::snapshot::read(tmp.path(), |_| Ok(())) {
            super::snapshot::Outcome::Loaded(i, c) => (i, c),
            _ => panic!("the store's own snapshot did not load"),
        };
        if swap {
            assert!(index.remove(committed));
        }
        assert!(index.insert(stranger));
        super::snapshot::write(tmp.path(), &covers, &index).unwrap();

        let s = Store::open(&cfg(tmp.path())).unwrap();
        assert!(!s.opened_from_snapshot(), "swap={swap}");
        assert!(!s.contains(stranger), "swap={swap}");
        assert_holds(&s, 4, 300);
        assert!(!snapshot_file(tmp.path()).exists());
        drop(s);
    }
    // The store's own snapshot still loads.
    std::fs::write(snapshot_file(tmp.path()), &good).unwrap();
    let s = Store::open(&cfg(tmp.path())).unwrap();
    assert!(s.opened_from_snapshot());
    assert_holds(&s, 4, 300);
}
