//! `tally produce`: publish JSON lines from stdin to a topic.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::process::ExitCode;

use anyhow::Context;

use super::{load, runtime};
use crate::kafka::{OutRecord, Producer, partition_for_key};
use crate::pipeline::kafka_config;

#[derive(Debug, clap::Args)]
pub struct ProduceArgs {
    #[arg(long, short = 'c', env = "TALLY_CONFIG")]
    config: std::path::PathBuf,
    /// Topic to publish to.
    #[arg(long)]
    topic: String,
    /// JSON pointer whose value becomes the record key (partitioned like Kafka's default partitioner).
    #[arg(long)]
    key_pointer: Option<String>,
    /// Send everything to this partition instead.
    #[arg(long)]
    partition: Option<i32>,
    /// Records per produce request.
    #[arg(long, default_value_t = 500)]
    chunk: usize,
}

pub fn produce(args: &ProduceArgs) -> anyhow::Result<ExitCode> {
    let settings = load(&args.config)?;
    let mut records: Vec<(Option<Vec<u8>>, Vec<u8>)> = Vec::new();
    for (n, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line.context("reading stdin")?;
        if line.trim().is_empty() {
            continue;
        }
        let key = match &args.key_pointer {
            Some(pointer) => match serde_json::from_str::<serde_json::Value>(&line) {
                Ok(value) => match value.pointer(pointer) {
                    Some(serde_json::Value::String(s)) => Some(s.clone().into_bytes()),
                    Some(other) => Some(other.to_string().into_bytes()),
                    None => None,
                },
                Err(e) => {
                    eprintln!(
                        "warning: line {}: not valid JSON ({e}); sent without a key",
                        n + 1
                    );
                    None
                }
            },
            None => None,
        };
        // Lines go out as they are: producing garbage on purpose is how bad input is tested.
        records.push((key, line.into_bytes()));
    }
    let rt = runtime()?;
    let total = records.len();
    let per_partition = rt.block_on(async {
        let producer = Producer::connect(&kafka_config(&settings.kafka)?).await?;
        let partitions = producer.partition_count(&args.topic).await?;
        if partitions <= 0 {
            anyhow::bail!("topic {} has no partitions", args.topic);
        }
        let mut by_partition: BTreeMap<i32, Vec<OutRecord>> = BTreeMap::new();
        for (i, (key, value)) in records.into_iter().enumerate() {
            let p = match (args.partition, &key) {
                (Some(p), _) => p,
                (None, Some(k)) => partition_for_key(k, partitions),
                (None, None) => (i as i32) % partitions,
            };
            by_partition.entry(p).or_default().push(OutRecord {
                key,
                value,
                headers: Vec::new(),
            });
        }
        let mut counts = BTreeMap::new();
        for (p, recs) in by_partition {
            counts.insert(p, recs.len());
            let mut recs = recs;
            while !recs.is_empty() {
                let rest = recs.split_off(recs.len().min(args.chunk.max(1)));
                producer
                    .send(&args.topic, p, recs)
                    .await
                    .with_context(|| format!("producing to {}/{p}", args.topic))?;
                recs = rest;
            }
        }
        Ok::<_, anyhow::Error>(counts)
    })?;
    let counts: serde_json::Map<String, serde_json::Value> = per_partition
        .into_iter()
        .map(|(p, n)| (p.to_string(), n.into()))
        .collect();
    println!(
        "{}",
        serde_json::json!({"topic": args.topic, "produced": total, "partitions": counts})
    );
    Ok(ExitCode::SUCCESS)
}
