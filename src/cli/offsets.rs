//! `tally offsets`: committed offsets from the store, beside the broker's log end.
//! While the daemon runs it answers from the daemon (`GET /v1/partitions`).

use std::process::ExitCode;
use std::time::Duration;

use super::access::{self, Access};
use super::{load, runtime};
use crate::admin::views::OffsetRow;
use crate::kafka::ClusterClient;
use crate::pipeline::kafka_config;

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
    let rows: Vec<OffsetRow> = match access::open(&settings)? {
        Access::Daemon(client) => access::daemon_get(&client, "/v1/partitions")?,
        Access::Store(store) => {
            let stored = store.offsets()?;
            drop(store);
            let mut log_ends = vec![None; stored.len()];
            if !args.offline {
                let rt = runtime()?;
                let client = ClusterClient::new(kafka_config(&settings.kafka)?);
                rt.block_on(async {
                    for (i, (topic, partition, entry)) in stored.iter().enumerate() {
                        let mut consumer = client.partition_consumer(topic, *partition);
                        // The fetch response's high watermark is the log end the consumer sees.
                        let fetched = tokio::time::timeout(
                            settings.kafka.request_timeout,
                            consumer.fetch(entry.next_offset, 1024, Duration::from_millis(10)),
                        )
                        .await;
                        match fetched {
                            Ok(Ok(f)) => log_ends[i] = Some(f.high_watermark),
                            Ok(Err(e)) => {
                                eprintln!("warning: log end of {topic}/{partition} unknown: {e}")
                            }
                            Err(_) => eprintln!(
                                "warning: log end of {topic}/{partition} unknown: timed out"
                            ),
                        }
                    }
                });
            }
            stored
                .iter()
                .zip(log_ends)
                .map(|((t, p, e), end)| OffsetRow::from_store(t, *p, e, end))
                .collect()
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<40} {:>9} {:>12} {:>12} {:>10}  UPDATED",
        "TOPIC", "PARTITION", "COMMITTED", "LOG-END", "LAG"
    );
    for r in &rows {
        let dash = || "-".to_string();
        println!(
            "{:<40} {:>9} {:>12} {:>12} {:>10}  {}",
            r.topic,
            r.partition,
            r.committed,
            r.log_end.map_or_else(dash, |e| e.to_string()),
            r.lag.map_or_else(dash, |l| l.to_string()),
            r.updated.clone().unwrap_or_else(dash),
        );
    }
    Ok(ExitCode::SUCCESS)
}
