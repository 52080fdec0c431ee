//! Store benchmark (DESIGN.md "Store"): commit throughput with a flush per
//! commit, bytes on disk per ID, index rebuild time and RSS, retention prune.
//!
//!   cargo run --release --example store_bench -- write DIR IDS [BATCH] [PARTITIONS] [realistic|short] [GROUP]
//!   cargo run --release --example store_bench -- open DIR [CACHE_MB]   # fresh process: rebuild time + RSS
//!   cargo run --release --example store_bench -- prune DIR AGE_S       # one prune_older_than, timed
//!   cargo run --release --example store_bench -- events FIRST COUNT    # Kill Bill usage JSONL of write's keys
//!   cargo run --release --example store_bench -- index N [table|hashset-id|hashset-sip]
//!
//! `write` commits IDS ids in batches of BATCH (default 1000) round-robin over
//! PARTITIONS (default 8), GROUP batches per commit (default 1), one flush per
//! commit, continuing the partitions' stored offsets (a second run appends).
//! Environment: `FIRST=K` starts at key number K (default 0, so appending
//! runs need distinct ranges); `AGE_S=S` writes batches committed S seconds
//! ago (through `restore_changelog`, the one path that keeps a commit time;
//! GROUP batches of one partition per call) for retention runs. `open` checks
//! hits on keys HITS_FROM.. (default 0).

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::path::PathBuf;
use std::time::Instant;

use tally::store::{
    ChangelogMark, ChangelogRestore, CommitBatch, DigestIndex, Store, StoreConfig, digest,
};

fn rss_kb(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// CPU time of this process so far (ns on CPU, from the scheduler): unlike
/// wall time it does not count waiting for a core on a loaded machine.
fn cpu_s() -> f64 {
    let s = std::fs::read_to_string("/proc/self/schedstat").unwrap_or_default();
    s.split_whitespace()
        .next()
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0.0, |ns| ns / 1e9)
}

/// Anonymous memory backed by transparent huge pages (kB).
fn huge_kb() -> u64 {
    let s = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("AnonHugePages:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn dir_bytes(p: &std::path::Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(p).unwrap().flatten() {
        let m = e.metadata().unwrap();
        n += if m.is_dir() {
            dir_bytes(&e.path())
        } else {
            m.len()
        };
    }
    n
}

/// Kill Bill scope key: tenantId/subscriptionExternalKey/trackingId (~84 bytes),
/// trackingId random like a UUID; or a short sequential key.
fn key(i: u64, realistic: bool) -> String {
    if realistic {
        let h = xxhash_rust::xxh3::xxh3_128(&i.to_le_bytes());
        let t = [
            "0d96d663-00c1-4ff7-8324-d97cc551d6b3",
            "7f1c2a3e-5b6d-4e8f-9a0b-1c2d3e4f5a6b",
        ][(i % 2) as usize];
        let u = format!("{h:032x}");
        format!(
            "{t}/sub-{:06}/{}-{}-{}-{}-{}",
            i % 50_000,
            &u[0..8],
            &u[8..12],
            &u[12..16],
            &u[16..20],
            &u[20..32]
        )
    } else {
        format!("evt-{i:010}")
    }
}

/// An environment variable as a number (the modes' optional knobs).
fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Bytes of the digest log, the key log, the index snapshot and the rest
/// (sled's files).
fn disk_split(dir: &std::path::Path) -> (u64, u64, u64, u64) {
    let sub = |name: &str| {
        let p = dir.join(name);
        if p.exists() { dir_bytes(&p) } else { 0 }
    };
    let (digests, keys) = (sub("digests"), sub("keys"));
    let snapshot = std::fs::metadata(dir.join("index.snapshot")).map_or(0, |m| m.len());
    (
        digests,
        keys,
        snapshot,
        dir_bytes(dir) - digests - keys - snapshot,
    )
}

fn print_disk(label: &str, dir: &std::path::Path, ids: u64) {
    let (d, k, x, s) = disk_split(dir);
    let per = |b: u64| b as f64 / ids.max(1) as f64;
    println!(
        "  {label}: digests/ {d} B ({:.1} B/id) + keys/ {k} B ({:.1} B/id) + sled {s} B ({:.1} B/id) = {} B ({:.1} B/id); index snapshot {x} B ({:.1} B/id)",
        per(d),
        per(k),
        per(s),
        d + k + s,
        per(d + k + s),
        per(x)
    );
}

/// One partition's next batch of `n` keys starting at key number `i`.
fn batch_of(i: u64, n: u64, p: i32, first: i64, realistic: bool) -> CommitBatch {
    let keys: Vec<String> = (i..i + n).map(|j| key(j, realistic)).collect();
    let digests = keys.iter().map(|k| digest(ROUTE, k)).collect();
    CommitBatch {
        route: ROUTE.into(),
        topic: TOPIC.into(),
        partition: p,
        first_offset: first,
        next_offset: first + n as i64,
        keys,
        digests,
        dead_letters: vec![],
        changelog: None,
    }
}

const ROUTE: &str = "usage";
const TOPIC: &str = "stream.usagemetrics";

fn write(args: &[String]) {
    let dir = PathBuf::from(&args[0]);
    let ids: u64 = args[1].parse().unwrap();
    let batch: u64 = args.get(2).map_or(1000, |s| s.parse().unwrap());
    let parts: i32 = args.get(3).map_or(8, |s| s.parse().unwrap());
    let realistic = args.get(4).is_none_or(|s| s == "realistic");
    let group: usize = args.get(5).map_or(1, |s| s.parse().unwrap());
    let first_key = env_u64("FIRST", 0);
    let age_s = env_u64("AGE_S", 0);
    let store = Store::open(&StoreConfig {
        path: dir.clone(),
        cache_capacity_bytes: 64 << 20,
    })
    .unwrap();
    let before = store.id_count() as u64;
    // Continue each partition's offsets, so a second run appends.
    let mut next_offset: Vec<i64> = (0..parts)
        .map(|p| store.offset(TOPIC, p).unwrap().map_or(0, |o| o.next_offset))
        .collect();
    let committed_at = tally_now_ms() - age_s as i64 * 1000;
    let mut i = 0u64;
    let mut p = 0i32;
    let (mut txn, mut flush, mut log, mut commits) = (0f64, 0f64, 0f64, 0u64);
    let started = Instant::now();
    let mut prep_time = 0f64;
    let mut commit_cpu = 0f64;
    // The last million commits (near the top of the store), measured alone.
    let tail_from = ids.saturating_sub(1_000_000);
    let (mut tail_wall, mut tail_cpu, mut tail_ids) = (0f64, 0f64, 0u64);
    let mut slowest = 0f64;
    while i < ids {
        let prep = Instant::now();
        let mut group_batches = Vec::with_capacity(group);
        // Backdated batches go through a changelog restore (the one way a
        // batch keeps a commit time other than now), one partition per call.
        let p_aged = p;
        for _ in 0..group {
            if i >= ids {
                break;
            }
            let n = batch.min(ids - i);
            let bp = if age_s > 0 { p_aged } else { p };
            let first = next_offset[bp as usize];
            next_offset[bp as usize] += n as i64;
            group_batches.push(batch_of(first_key + i, n, bp, first, realistic));
            i += n;
            if age_s == 0 {
                p = (p + 1) % parts;
            }
        }
        if age_s > 0 {
            p = (p + 1) % parts;
        }
        let in_tail = i > tail_from;
        let n_ids: u64 = group_batches.iter().map(|b| b.keys.len() as u64).sum();
        prep_time += prep.elapsed().as_secs_f64();
        let c0 = cpu_s();
        let w0 = Instant::now();
        let st = if age_s > 0 {
            store
                .restore_changelog(&ChangelogRestore {
                    route: ROUTE.into(),
                    topic: TOPIC.into(),
                    partition: p_aged,
                    committed_at_ms: vec![committed_at; group_batches.len()],
                    next_offset: group_batches.last().map(|b| b.next_offset),
                    mark: ChangelogMark {
                        topic: "store-bench.changelog".into(),
                        next_offset: commits as i64 + 1,
                    },
                    batches: group_batches,
                })
                .unwrap()
        } else {
            store.commit(&group_batches).unwrap()
        };
        let wall = w0.elapsed().as_secs_f64();
        let cpu = cpu_s() - c0;
        slowest = slowest.max(wall);
        commit_cpu += cpu;
        if in_tail {
            tail_wall += wall;
            tail_cpu += cpu;
            tail_ids += n_ids;
        }
        txn += st.txn_time.as_secs_f64();
        log += st.log_time.as_secs_f64();
        flush += st.flush_time.as_secs_f64();
        commits += 1;
    }
    let total = started.elapsed().as_secs_f64();
    let commit_time = total - prep_time;
    let disk = store.size_on_disk().unwrap();
    let stored = store.id_count() as u64;
    // A clean close, as `tally run` stops: writes the index snapshot.
    let close_started = Instant::now();
    store.close().unwrap();
    let close_s = close_started.elapsed().as_secs_f64();
    drop(store);
    let snapshot_bytes = std::fs::metadata(dir.join("index.snapshot")).map_or(0, |m| m.len());
    let files = dir_bytes(&dir);
    println!(
        "write ids={ids} batch={batch} partitions={parts} keys={} group={group} commits={commits} first_key={first_key} age_s={age_s} (store {before} -> {stored} ids)",
        if realistic { "realistic" } else { "short" }
    );
    println!(
        "  close (flush + index snapshot) {close_s:.2}s; snapshot {snapshot_bytes} bytes = {:.1} B/ID",
        snapshot_bytes as f64 / stored.max(1) as f64
    );
    println!(
        "  commit wall {commit_time:.2}s (excl. key generation {prep_time:.2}s) => {:.0} ids/s; slowest commit {:.1} ms",
        ids as f64 / commit_time,
        slowest * 1e3
    );
    println!(
        "  commit CPU {commit_cpu:.2}s = {:.0} ns/id (process CPU, incl. sled's threads)",
        commit_cpu * 1e9 / ids as f64
    );
    println!(
        "  last {tail_ids} ids (store {} -> {stored}): wall {tail_wall:.2}s => {:.0} ids/s, CPU {:.0} ns/id",
        stored.saturating_sub(tail_ids),
        tail_ids as f64 / tail_wall,
        tail_cpu * 1e9 / tail_ids.max(1) as f64
    );
    println!(
        "  per commit: logs {:.3} ms, txn {:.3} ms, flush {:.3} ms",
        log * 1e3 / commits as f64,
        txn * 1e3 / commits as f64,
        flush * 1e3 / commits as f64
    );
    println!(
        "  size_on_disk {disk} B = {:.1} B/id; directory {files} B = {:.1} B/id",
        disk as f64 / stored.max(1) as f64,
        files as f64 / stored.max(1) as f64
    );
    print_disk("on disk", &dir, stored);
}

fn tally_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn open(args: &[String]) {
    let dir = PathBuf::from(&args[0]);
    let cache_mb: u64 = args.get(1).map_or(64, |s| s.parse().unwrap());
    let before = rss_kb("VmRSS:");
    let t = Instant::now();
    let cpu0 = cpu_s();
    let store = Store::open(&StoreConfig {
        path: dir.clone(),
        cache_capacity_bytes: cache_mb << 20,
    })
    .unwrap();
    let open_time = t.elapsed();
    let open_cpu = cpu_s() - cpu0;
    println!(
        "open ids={} open {:.3}s, CPU {open_cpu:.3}s (index rebuild {:.3}s) index {} MB (huge pages {} MB); RSS before {} MB, after {} MB, peak {} MB",
        store.id_count(),
        open_time.as_secs_f64(),
        store.rebuild_time().as_secs_f64(),
        store.index_bytes() >> 20,
        huge_kb() >> 10,
        before >> 10,
        rss_kb("VmRSS:") >> 10,
        rss_kb("VmHWM:") >> 10,
    );
    // Lookup cost on the rebuilt index (misses dominate: most records are new).
    let probes: Vec<u128> = (0..2_000_000u64)
        .map(|i| digest(ROUTE, &format!("miss-{i}")))
        .collect();
    let t = Instant::now();
    let hits = probes.iter().filter(|d| store.contains(**d)).count();
    let miss = t.elapsed().as_secs_f64() / probes.len() as f64;
    // Hits: stored keys, as `write` made them (from key number HITS_FROM).
    let from = env_u64("HITS_FROM", 0);
    let n = (store.id_count() as u64).min(1_000_000);
    let stored: Vec<u128> = (from..from + n)
        .map(|i| digest(ROUTE, &key(i, true)))
        .collect();
    let t = Instant::now();
    let found = stored.iter().filter(|d| store.contains(**d)).count();
    let hit = t.elapsed().as_secs_f64() / n.max(1) as f64;
    let k = format!(
        "0d96d663-00c1-4ff7-8324-d97cc551d6b3/sub-000042/{}",
        "ab12cd34-0000-4000-8000-0123456789ab"
    );
    let t = Instant::now();
    let mut acc = 0u128;
    for _ in 0..1_000_000 {
        acc ^= digest(ROUTE, std::hint::black_box(&k));
    }
    let dig = t.elapsed().as_secs_f64() / 1e6;
    println!(
        "  contains() miss {:.0} ns = {:.1}M/s ({hits} false hits); hit {:.0} ns = {:.1}M/s ({found} of {n} found); digest() of an 84-byte key {:.0} ns ({})",
        miss * 1e9,
        1e-6 / miss,
        hit * 1e9,
        1e-6 / hit,
        dig * 1e9,
        acc & 1
    );
    let ids = store.id_count() as u64;
    drop(store);
    print_disk("on disk", &dir, ids);
}

/// `prune DIR AGE_S`: one `prune_older_than` on a store opened in this
/// process; time, CPU, index and RSS before/after, disk returned.
fn prune(args: &[String]) {
    let dir = PathBuf::from(&args[0]);
    let age_s: u64 = args[1].parse().unwrap();
    let store = Store::open(&StoreConfig {
        path: dir.clone(),
        cache_capacity_bytes: 64 << 20,
    })
    .unwrap();
    let ids0 = store.id_count() as u64;
    let (idx0, rss0) = (store.index_bytes(), rss_kb("VmRSS:"));
    print_disk("before", &dir, ids0);
    let t = Instant::now();
    let cpu0 = cpu_s();
    let mut chunks = 0u32;
    let st = store
        .prune_older_than_with(std::time::Duration::from_secs(age_s), |_| chunks += 1)
        .unwrap();
    let wall = t.elapsed().as_secs_f64();
    let cpu = cpu_s() - cpu0;
    let ids1 = store.id_count() as u64;
    println!(
        "prune age_s={age_s}: {} ids in {} batches ({chunks} chunks) in {wall:.3}s, CPU {cpu:.3}s => {:.0} ids/s, {:.0} ns CPU/id; store {ids0} -> {ids1} ids",
        st.ids,
        st.batches,
        st.ids as f64 / wall,
        cpu * 1e9 / st.ids.max(1) as f64
    );
    println!(
        "  index {} -> {} MB; RSS {} -> {} MB (peak {} MB)",
        idx0 >> 20,
        store.index_bytes() >> 20,
        rss0 >> 10,
        rss_kb("VmRSS:") >> 10,
        rss_kb("VmHWM:") >> 10
    );
    // How much of the rest is glibc keeping freed heap (the index's old
    // arrays) rather than live memory.
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: malloc_trim only hands free heap pages back to the kernel.
        unsafe { libc::malloc_trim(0) };
        println!("  RSS after malloc_trim(0): {} MB", rss_kb("VmRSS:") >> 10);
    }
    drop(store);
    print_disk("after", &dir, ids1);
}

/// `events FIRST COUNT`: Kill Bill usage events (JSON lines on stdout) whose
/// dedupe keys are `write`'s realistic keys FIRST..FIRST+COUNT, so a topic
/// can replay IDs a bench store holds.
fn events(args: &[String]) {
    use std::io::Write;
    let first: u64 = args[0].parse().unwrap();
    let count: u64 = args[1].parse().unwrap();
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::new(out.lock());
    for i in first..first + count {
        let k = key(i, true);
        let mut parts = k.splitn(3, '/');
        let (t, sub, id) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        writeln!(
            out,
            r#"{{"subscriptionExternalKey":"{sub}","trackingId":"{id}","tenantId":"{t}","unitUsageRecords":[{{"unitType":"api-calls","usageRecords":[{{"recordDate":"2024-05-01T10:00:00","amount":"12.5"}}]}}]}}"#
        )
        .unwrap();
    }
}

#[derive(Default)]
struct Identity(u64);
impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _: &[u8]) {
        unreachable!("only u128 digests are hashed")
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64;
    }
}

fn index(args: &[String]) {
    let n: u64 = args[0].parse().unwrap();
    let kind = args.get(1).map_or("table", String::as_str);
    let ds: Vec<u128> = (0..n)
        .map(|i| xxhash_rust::xxh3::xxh3_128(&i.to_le_bytes()))
        .collect();
    let probe: Vec<u128> = (n..n + 1_000_000)
        .map(|i| xxhash_rust::xxh3::xxh3_128(&i.to_le_bytes()))
        .collect();
    let base = rss_kb("VmRSS:");
    let t = Instant::now();
    let cpu0 = cpu_s();
    // `*-presized` know n up front (the store does, from its counters); the others grow.
    macro_rules! run {
        ($set:expr, $ins:ident, $has:ident) => {{
            let mut s = $set;
            for d in &ds {
                s.$ins(*d);
            }
            let build = t.elapsed().as_secs_f64();
            let build_cpu = cpu_s() - cpu0;
            let rss = rss_kb("VmRSS:") - base;
            let t2 = Instant::now();
            let hits = probe.iter().filter(|d| s.$has(d)).count();
            let miss = t2.elapsed().as_secs_f64() * 1e9 / probe.len() as f64;
            let t3 = Instant::now();
            let found = ds.iter().take(1_000_000).filter(|d| s.$has(d)).count();
            let hit = t3.elapsed().as_secs_f64() * 1e9 / found as f64;
            println!("index {kind} n={n}: build {build:.3}s (cpu {build_cpu:.3}s), +RSS {} MB (huge pages {} MB), miss {miss:.0} ns, hit {hit:.0} ns ({hits})", rss >> 10, huge_kb() >> 10);
        }};
    }
    struct T(DigestIndex);
    impl T {
        fn insert(&mut self, d: u128) {
            self.0.insert(d);
        }
        fn has(&self, d: &u128) -> bool {
            self.0.contains(*d)
        }
    }
    match kind {
        "table" => run!(T(DigestIndex::default()), insert, has),
        "table-presized" => run!(T(DigestIndex::with_expected(n as usize)), insert, has),
        "table-bulk" => {
            // What the store does at open: presized, digests fed in 64k chunks.
            let mut s = DigestIndex::with_expected(n as usize);
            let chunk: usize = std::env::var("CHUNK")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(1 << 20);
            let mut scratch = Vec::new();
            for part in ds.chunks(chunk) {
                s.extend_bulk(part, &mut scratch);
            }
            drop(scratch);
            let build = t.elapsed().as_secs_f64();
            let build_cpu = cpu_s() - cpu0;
            let rss = rss_kb("VmRSS:") - base;
            let t2 = Instant::now();
            let hits = probe.iter().filter(|d| s.contains(**d)).count();
            let miss = t2.elapsed().as_secs_f64() * 1e9 / probe.len() as f64;
            println!(
                "index {kind} n={n}: build {build:.3}s (cpu {build_cpu:.3}s), +RSS {} MB, miss {miss:.0} ns ({hits})",
                rss >> 10
            );
        }
        "hashset-id" => run!(
            HashSet::<u128, BuildHasherDefault<Identity>>::default(),
            insert,
            contains
        ),
        "hashset-id-presized" => run!(
            HashSet::<u128, BuildHasherDefault<Identity>>::with_capacity_and_hasher(
                n as usize,
                Default::default()
            ),
            insert,
            contains
        ),
        "hashset-sip" => run!(HashSet::<u128>::new(), insert, contains),
        other => panic!("unknown index kind {other}"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("write") => write(&args[1..]),
        Some("open") => open(&args[1..]),
        Some("index") => index(&args[1..]),
        Some("prune") => prune(&args[1..]),
        Some("events") => events(&args[1..]),
        _ => eprintln!("usage: see the header of examples/store_bench.rs"),
    }
}
