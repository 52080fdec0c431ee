//! `tally offsets`: committed offsets from the store, beside the broker's log end.
//! While the daemon runs it answers from the daemon (`GET /v1/partitions`).

use std::process::ExitCode;
use std::time::Duration;

use super::access::{self, Access};
use super::{load, runtime};
use std::collections::BTreeMap;

use crate::admin::views::{GroupView, OffsetRow};
use crate::kafka::ClusterClient;
use crate::kafka::group::GroupCoordinator;
use crate::pipeline::kafka_config;
use crate::store::OffsetEntry;

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
    let mut group_view: Option<GroupView> = None;
    let rows: Vec<OffsetRow> = match access::open(&settings)? {
        Access::Daemon(client) => {
            if settings.assignment.group().is_some() {
                group_view = Some(access::daemon_get(&client, "/v1/group")?);
            }
            access::daemon_get(&client, "/v1/partitions")?
        }
        Access::Store(store) => {
            let stored = store.offsets()?;
            drop(store);
            let mut log_ends = vec![None; stored.len()];
            let mut group_committed = BTreeMap::new();
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
                    if let Some(g) = settings.assignment.group() {
                        group_committed =
                            group_offsets(&client, &g.group_id, &stored, &settings).await;
                    }
                });
            }
            stored
                .iter()
                .zip(log_ends)
                .map(|((t, p, e), end)| {
                    let mut row = OffsetRow::from_store(t, *p, e, end);
                    if let Some(g) = settings.assignment.group() {
                        row.group = Some(g.group_id.clone());
                        row.group_committed = group_committed.get(&(t.clone(), *p)).copied();
                    }
                    row
                })
                .collect()
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(g) = &group_view {
        let owned: usize = g.owned.values().map(Vec::len).sum();
        println!(
            "# group {} generation {} member {}{} ({}): owns {owned} partition(s){}",
            g.group_id,
            g.generation,
            if g.member_id.is_empty() {
                "-"
            } else {
                &g.member_id
            },
            if g.leader { ", leader" } else { "" },
            g.state,
            g.members
                .map_or(String::new(), |n| format!(" of a {n}-member generation")),
        );
    }
    let owned_col = rows.iter().any(|r| r.owned.is_some());
    let group_col = settings.assignment.group().is_some() && group_view.is_none();
    let mut header = format!(
        "{:<40} {:>9} {:>12} {:>12} {:>10}",
        "TOPIC", "PARTITION", "COMMITTED", "LOG-END", "LAG"
    );
    if owned_col {
        header.push_str(&format!(" {:>6}", "OWNED"));
    }
    if group_col {
        header.push_str(&format!(" {:>15}", "GROUP-COMMITTED"));
    }
    println!("{header}  UPDATED");
    for r in &rows {
        let dash = || "-".to_string();
        let mut line = format!(
            "{:<40} {:>9} {:>12} {:>12} {:>10}",
            r.topic,
            r.partition,
            r.committed,
            r.log_end.map_or_else(dash, |e| e.to_string()),
            r.lag.map_or_else(dash, |l| l.to_string()),
        );
        if owned_col {
            let owned = match r.owned {
                Some(true) => "yes",
                Some(false) => "no",
                None => "-",
            };
            line.push_str(&format!(" {owned:>6}"));
        }
        if group_col {
            let g = r.group_committed.map_or_else(dash, |o| o.to_string());
            line.push_str(&format!(" {g:>15}"));
        }
        println!("{line}  {}", r.updated.clone().unwrap_or_else(dash));
    }
    Ok(ExitCode::SUCCESS)
}

/// The group's committed offsets for the stored partitions (empty, with a
/// warning, when the coordinator cannot be asked).
async fn group_offsets(
    client: &ClusterClient,
    group_id: &str,
    stored: &[(String, i32, OffsetEntry)],
    settings: &crate::config::Settings,
) -> BTreeMap<(String, i32), i64> {
    let mut wanted: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for (t, p, _) in stored {
        wanted.entry(t.clone()).or_default().push(*p);
    }
    let wanted: Vec<(String, Vec<i32>)> = wanted.into_iter().collect();
    let mut coordinator = GroupCoordinator::new(client.clone(), group_id);
    match tokio::time::timeout(
        settings.kafka.request_timeout,
        coordinator.committed(&wanted),
    )
    .await
    {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            eprintln!("warning: group {group_id}'s committed offsets unknown: {e}");
            BTreeMap::new()
        }
        Err(_) => {
            eprintln!("warning: group {group_id}'s committed offsets unknown: timed out");
            BTreeMap::new()
        }
    }
}
