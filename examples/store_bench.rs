//! Store benchmark (DESIGN.md "Store"): commit throughput with a flush per
//! commit, bytes on disk per ID, index rebuild time and RSS.
//!
//!   cargo run --release --example store_bench -- write DIR IDS [BATCH] [PARTITIONS] [realistic|short] [GROUP]
//!   cargo run --release --example store_bench -- open DIR [CACHE_MB]   # fresh process: rebuild time + RSS
//!   cargo run --release --example store_bench -- index N [table|hashset-id|hashset-sip]
//!
//! `write` commits IDS ids in batches of BATCH (default 1000) round-robin over
//! PARTITIONS (default 8), GROUP batches per commit (default 1), one flush per commit.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::path::PathBuf;
use std::time::Instant;

use tally::store::{CommitBatch, DigestIndex, Store, StoreConfig, digest};

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

fn write(args: &[String]) {
    let dir = PathBuf::from(&args[0]);
    let ids: u64 = args[1].parse().unwrap();
    let batch: u64 = args.get(2).map_or(1000, |s| s.parse().unwrap());
    let parts: i32 = args.get(3).map_or(8, |s| s.parse().unwrap());
    let realistic = args.get(4).is_none_or(|s| s == "realistic");
    let group: usize = args.get(5).map_or(1, |s| s.parse().unwrap());
    let store = Store::open(&StoreConfig {
        path: dir.clone(),
        cache_capacity_bytes: 64 << 20,
    })
    .unwrap();
    let route = "usage";
    let mut next_offset = vec![0i64; parts as usize];
    let mut i = 0u64;
    let mut p = 0i32;
    let (mut txn, mut flush, mut log, mut commits) = (0f64, 0f64, 0f64, 0u64);
    let started = Instant::now();
    let mut prep_time = 0f64;
    let mut commit_cpu = 0f64;
    while i < ids {
        let prep = Instant::now();
        let mut group_batches = Vec::with_capacity(group);
        for _ in 0..group {
            if i >= ids {
                break;
            }
            let n = batch.min(ids - i);
            let keys: Vec<String> = (i..i + n).map(|j| key(j, realistic)).collect();
            let digests = keys.iter().map(|k| digest(route, k)).collect();
            let first = next_offset[p as usize];
            next_offset[p as usize] += n as i64;
            group_batches.push(CommitBatch {
                route: route.into(),
                topic: "stream.usagemetrics".into(),
                partition: p,
                first_offset: first,
                next_offset: first + n as i64,
                keys,
                digests,
                dead_letters: vec![],
                changelog: None,
            });
            i += n;
            p = (p + 1) % parts;
        }
        prep_time += prep.elapsed().as_secs_f64();
        let c0 = cpu_s();
        let st = store.commit(&group_batches).unwrap();
        commit_cpu += cpu_s() - c0;
        txn += st.txn_time.as_secs_f64();
        log += st.log_time.as_secs_f64();
        flush += st.flush_time.as_secs_f64();
        commits += 1;
    }
    let total = started.elapsed().as_secs_f64();
    let commit_time = total - prep_time;
    let disk = store.size_on_disk().unwrap();
    drop(store);
    let files = dir_bytes(&dir);
    println!(
        "write ids={ids} batch={batch} partitions={parts} keys={} group={group} commits={commits}",
        if realistic { "realistic" } else { "short" }
    );
    println!(
        "  commit wall {commit_time:.2}s (excl. key generation {prep_time:.2}s) => {:.0} ids/s",
        ids as f64 / commit_time
    );
    println!(
        "  commit CPU {commit_cpu:.2}s = {:.0} ns/id (process CPU, incl. sled's threads)",
        commit_cpu * 1e9 / ids as f64
    );
    println!(
        "  per commit: logs {:.3} ms, txn {:.3} ms, flush {:.3} ms",
        log * 1e3 / commits as f64,
        txn * 1e3 / commits as f64,
        flush * 1e3 / commits as f64
    );
    println!(
        "  sled size_on_disk {disk} B = {:.1} B/id; directory {files} B = {:.1} B/id",
        disk as f64 / ids as f64,
        files as f64 / ids as f64
    );
}

fn open(args: &[String]) {
    let dir = PathBuf::from(&args[0]);
    let cache_mb: u64 = args.get(1).map_or(64, |s| s.parse().unwrap());
    let before = rss_kb("VmRSS:");
    let t = Instant::now();
    let store = Store::open(&StoreConfig {
        path: dir,
        cache_capacity_bytes: cache_mb << 20,
    })
    .unwrap();
    let open_time = t.elapsed();
    println!(
        "open ids={} open {:.3}s (index rebuild {:.3}s) index {} MB; RSS before {} MB, after {} MB, peak {} MB",
        store.id_count(),
        open_time.as_secs_f64(),
        store.rebuild_time().as_secs_f64(),
        store.index_bytes() >> 20,
        before >> 10,
        rss_kb("VmRSS:") >> 10,
        rss_kb("VmHWM:") >> 10,
    );
    // Lookup cost on the rebuilt index (misses dominate: most records are new).
    let probes: Vec<u128> = (0..2_000_000u64)
        .map(|i| digest("usage", &format!("miss-{i}")))
        .collect();
    let t = Instant::now();
    let hits = probes.iter().filter(|d| store.contains(**d)).count();
    let miss = t.elapsed().as_secs_f64() / probes.len() as f64;
    let k = format!(
        "0d96d663-00c1-4ff7-8324-d97cc551d6b3/sub-000042/{}",
        "ab12cd34-0000-4000-8000-0123456789ab"
    );
    let t = Instant::now();
    let mut acc = 0u128;
    for _ in 0..1_000_000 {
        acc ^= digest("usage", std::hint::black_box(&k));
    }
    let dig = t.elapsed().as_secs_f64() / 1e6;
    println!(
        "  contains() miss {:.0} ns ({hits} false hits); digest() of an 84-byte key {:.0} ns ({})",
        miss * 1e9,
        dig * 1e9,
        acc & 1
    );
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
        _ => eprintln!("usage: see the header of examples/store_bench.rs"),
    }
}
