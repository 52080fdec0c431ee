//! Fetch-loop baselines for scripts/bench.sh: read every partition of a topic
//! from offset 0 up to its high watermark, one tokio task per partition,
//! decoding nothing beyond what the client itself does and committing nothing.
//!
//!   cargo run --release --example raw_rskafka_fetch -- \
//!       --broker 127.0.0.1:9092 --topic t [--partitions 8] [--max-bytes 1048576] \
//!       [--max-wait-ms 500] [--client rskafka|tally] [--decode]
//!
//! `--client rskafka` (default) uses rskafka 0.6's `PartitionClient::fetch_records`
//! (one multiplexed connection per broker); `--client tally` uses tally's own
//! consume path, `ClusterClient` / `PartitionConsumer::fetch` (one connection per
//! partition, RecordBatch v2 decoder, read_committed assembly) — the ceiling of
//! our client without the pipeline, store or sink. `--decode` (tally client
//! only) also runs every record through the route decoder tally uses for
//! `format = "killbill-usage"` and digests its dedupe key, as the pipeline does
//! before the dedupe lookup — fetch + decode, still without store or sink.
//!
//! The end of a partition is the high watermark of the fetch responses (on
//! the Tansu test broker ListOffsets "latest" is unreliable). Prints one JSON
//! object: records, value bytes, seconds (first fetch to last partition done,
//! connection setup excluded), setup seconds, records/s, MB/s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rskafka::client::ClientBuilder;
use rskafka::client::partition::UnknownTopicHandling;
use tally::config::{DedupeSource, FormatKind};
use tally::format::Decoder;
use tally::kafka::{ClusterClient, KafkaConfig};

#[derive(Debug, Clone)]
struct Args {
    broker: String,
    topic: String,
    partitions: i32,
    max_bytes: i32,
    max_wait_ms: i32,
    client: String,
    decode: bool,
}

fn usage() -> ! {
    eprintln!(
        "usage: raw_rskafka_fetch --broker HOST:PORT --topic T [--partitions 8] \
         [--max-bytes 1048576] [--max-wait-ms 500] [--client rskafka|tally] [--decode]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut a = Args {
        broker: std::env::var("TALLY_TEST_BROKER").unwrap_or_default(),
        topic: String::new(),
        partitions: 8,
        max_bytes: 1 << 20,
        max_wait_ms: 500,
        client: "rskafka".into(),
        decode: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--broker" => a.broker = val(),
            "--topic" => a.topic = val(),
            "--partitions" => a.partitions = val().parse().unwrap_or_else(|_| usage()),
            "--max-bytes" => a.max_bytes = val().parse().unwrap_or_else(|_| usage()),
            "--max-wait-ms" => a.max_wait_ms = val().parse().unwrap_or_else(|_| usage()),
            "--client" => a.client = val(),
            "--decode" => a.decode = true,
            "-h" | "--help" => usage(),
            _ => usage(),
        }
    }
    if a.broker.is_empty() || a.topic.is_empty() || a.partitions < 1 || a.max_bytes < 1 {
        usage()
    }
    let known = matches!(a.client.as_str(), "rskafka" | "tally");
    if !known || (a.decode && a.client != "tally") {
        usage()
    }
    a
}

#[derive(Default, Clone, Copy)]
struct Count {
    records: u64,
    bytes: u64,
    fetches: u64,
    decode_errors: u64,
}

impl std::ops::AddAssign for Count {
    fn add_assign(&mut self, o: Count) {
        self.records += o.records;
        self.bytes += o.bytes;
        self.fetches += o.fetches;
        self.decode_errors += o.decode_errors;
    }
}

/// Consecutive empty answers below the high watermark before giving up on a
/// partition (control batches only would look like this; our data has none).
const MAX_STALLS: u32 = 20;

async fn run_rskafka(a: &Args) -> anyhow::Result<(Count, f64, f64)> {
    let t_setup = Instant::now();
    let client = Arc::new(ClientBuilder::new(vec![a.broker.clone()]).build().await?);
    let mut pcs = Vec::new();
    for p in 0..a.partitions {
        pcs.push(
            client
                .partition_client(a.topic.clone(), p, UnknownTopicHandling::Retry)
                .await?,
        );
    }
    let setup = t_setup.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for (p, pc) in pcs.into_iter().enumerate() {
        let (max_bytes, max_wait) = (a.max_bytes, a.max_wait_ms);
        tasks.push(tokio::spawn(async move {
            let mut c = Count::default();
            let mut offset = 0i64;
            let mut stalls = 0;
            loop {
                let (records, hw) = pc.fetch_records(offset, 1..max_bytes, max_wait).await?;
                c.fetches += 1;
                if let Some(last) = records.last() {
                    offset = last.offset + 1;
                    stalls = 0;
                } else {
                    stalls += 1;
                }
                for r in &records {
                    c.records += 1;
                    c.bytes += r.record.value.as_ref().map_or(0, |v| v.len() as u64);
                }
                if offset >= hw {
                    break;
                }
                if stalls >= MAX_STALLS {
                    anyhow::bail!("partition {p}: no progress at offset {offset} (hw {hw})");
                }
            }
            Ok::<_, anyhow::Error>(c)
        }));
    }
    let mut total = Count::default();
    for t in tasks {
        total += t.await??;
    }
    Ok((total, t0.elapsed().as_secs_f64(), setup))
}

async fn run_tally(a: &Args) -> anyhow::Result<(Count, f64, f64)> {
    let t_setup = Instant::now();
    let client = ClusterClient::new(KafkaConfig::new(vec![a.broker.clone()]));
    client.metadata(std::slice::from_ref(&a.topic)).await?;
    let setup = t_setup.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..a.partitions {
        let mut pc = client.partition_consumer(&a.topic, p);
        let max_bytes = a.max_bytes;
        let max_wait = Duration::from_millis(a.max_wait_ms as u64);
        let decoder = a
            .decode
            .then(|| Decoder::new(FormatKind::KillbillUsage, DedupeSource::Format));
        tasks.push(tokio::spawn(async move {
            let mut c = Count::default();
            let mut offset = 0i64;
            let mut stalls = 0;
            loop {
                let f = pc.fetch(offset, max_bytes, max_wait).await?;
                c.fetches += 1;
                if f.next_offset > offset {
                    stalls = 0;
                } else {
                    stalls += 1;
                }
                offset = f.next_offset;
                for r in &f.records {
                    c.records += 1;
                    c.bytes += r.value.as_ref().map_or(0, |v| v.len() as u64);
                    if let Some(d) = &decoder {
                        match d.decode(r.key.as_ref(), r.value.as_ref()) {
                            Ok(dec) => {
                                let digest = dec
                                    .dedupe_key
                                    .as_deref()
                                    .map(|k| tally::store::digest("usage", k));
                                std::hint::black_box((dec, digest));
                            }
                            Err(_) => c.decode_errors += 1,
                        }
                    }
                }
                if offset >= f.high_watermark {
                    break;
                }
                if stalls >= MAX_STALLS {
                    anyhow::bail!(
                        "partition {p}: no progress at offset {offset} (hw {})",
                        f.high_watermark
                    );
                }
            }
            Ok::<_, anyhow::Error>(c)
        }));
    }
    let mut total = Count::default();
    for t in tasks {
        total += t.await??;
    }
    Ok((total, t0.elapsed().as_secs_f64(), setup))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = parse_args();
    let (c, secs, setup) = match a.client.as_str() {
        "rskafka" => run_rskafka(&a).await?,
        _ => run_tally(&a).await?,
    };
    let out = serde_json::json!({
        "client": a.client,
        "decode": a.decode,
        "decode_errors": c.decode_errors,
        "topic": a.topic,
        "partitions": a.partitions,
        "max_bytes": a.max_bytes,
        "records": c.records,
        "value_bytes": c.bytes,
        "fetches": c.fetches,
        "setup_seconds": (setup * 1e4).round() / 1e4,
        "seconds": (secs * 1e4).round() / 1e4,
        "records_per_sec": (c.records as f64 / secs.max(1e-9)).round() as u64,
        "mb_per_sec": (c.bytes as f64 / secs.max(1e-9) / 1e5).round() / 10.0,
    });
    println!("{out}");
    Ok(())
}
