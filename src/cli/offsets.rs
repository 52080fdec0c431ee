//! `tally offsets`: committed offsets from the store, beside the broker's log end.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use super::{load, runtime};
use crate::kafka::ClusterClient;
use crate::pipeline::{kafka_config, store_config};
use crate::store::Store;

#[derive(Debug, clap::Args)]
pub struct OffsetsArgs {
    #[arg(long, short = 'c', env = "TALLY_CONFIG")]
    config: std::path::PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Do not ask the broker for log-end offsets.
    #[arg(long)]
    offline: bool,
}

pub fn offsets(args: &OffsetsArgs) -> anyhow::Result<ExitCode> {
    let settings = load(&args.config)?;
    let store = Store::open(&store_config(&settings)).context("opening the store")?;
    let rows = store.offsets()?;
    drop(store);
    let mut log_ends = vec![None; rows.len()];
    if !args.offline {
        let rt = runtime()?;
        rt.block_on(async {
            let client = ClusterClient::new(kafka_config(&settings.kafka));
            for (i, (topic, partition, _)) in rows.iter().enumerate() {
                let mut consumer = client.partition_consumer(topic, *partition);
                // The fetch response's high watermark is the log end the consumer sees.
                let fetched = tokio::time::timeout(
                    settings.kafka.request_timeout,
                    consumer.fetch(rows[i].2.next_offset, 1024, Duration::from_millis(10)),
                )
                .await;
                match fetched {
                    Ok(Ok(f)) => log_ends[i] = Some(f.high_watermark),
                    Ok(Err(e)) => eprintln!("warning: log end of {topic}/{partition} unknown: {e}"),
                    Err(_) => {
                        eprintln!("warning: log end of {topic}/{partition} unknown: timed out")
                    }
                }
            }
        });
    }
    if args.json {
        let list: Vec<serde_json::Value> = rows
            .iter()
            .zip(&log_ends)
            .map(|((topic, partition, entry), end)| {
                serde_json::json!({
                    "topic": topic,
                    "partition": partition,
                    "committed": entry.next_offset,
                    "log_end": end,
                    "lag": end.map(|e| (e - entry.next_offset).max(0)),
                    "updated": fmt_ms(entry.updated_at_ms),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        println!(
            "{:<40} {:>9} {:>12} {:>12} {:>10}  UPDATED",
            "TOPIC", "PARTITION", "COMMITTED", "LOG-END", "LAG"
        );
        for ((topic, partition, entry), end) in rows.iter().zip(&log_ends) {
            let (end_s, lag_s) = match end {
                Some(e) => (e.to_string(), (e - entry.next_offset).max(0).to_string()),
                None => ("-".to_string(), "-".to_string()),
            };
            println!(
                "{:<40} {:>9} {:>12} {:>12} {:>10}  {}",
                topic,
                partition,
                entry.next_offset,
                end_s,
                lag_s,
                fmt_ms(entry.updated_at_ms)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn fmt_ms(ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| "-".into())
}
