//! `tally dlq`: the dead letters — every record tally did not deliver, and why.

use std::process::ExitCode;

use anyhow::Context;
use serde_json::{Value, json};

use super::load;
use crate::pipeline::store_config;
use crate::store::{DeadLetter, Store};

#[derive(Debug, clap::Args)]
pub struct DlqArgs {
    #[command(subcommand)]
    command: DlqCommand,
}

#[derive(Debug, clap::Subcommand)]
enum DlqCommand {
    /// List dead letters (oldest first).
    List {
        #[arg(long, short = 'c', env = "TALLY_CONFIG")]
        config: std::path::PathBuf,
        /// Only this route.
        #[arg(long)]
        route: Option<String>,
        /// Only reasons containing this text.
        #[arg(long)]
        reason: Option<String>,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one dead letter in full, payload included.
    Show {
        #[arg(long, short = 'c', env = "TALLY_CONFIG")]
        config: std::path::PathBuf,
        id: u64,
    },
}

pub fn dlq(args: &DlqArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        DlqCommand::List {
            config,
            route,
            reason,
            json,
        } => {
            let store = open(config)?;
            let letters: Vec<(u64, DeadLetter)> = store
                .dead_letters()?
                .into_iter()
                .filter(|(_, d)| route.as_ref().is_none_or(|r| &d.route == r))
                .filter(|(_, d)| {
                    reason
                        .as_ref()
                        .is_none_or(|r| d.reason.contains(r.as_str()))
                })
                .collect();
            if *json {
                for (id, d) in &letters {
                    println!("{}", to_json(*id, d, false));
                }
            } else {
                println!(
                    "{:>6}  {:<12} {:<32} {:>5} {:>10}  {:<10} REASON",
                    "ID", "ROUTE", "TOPIC", "PART", "OFFSET", "CLASS"
                );
                for (id, d) in &letters {
                    println!(
                        "{:>6}  {:<12} {:<32} {:>5} {:>10}  {:<10} {}",
                        id, d.route, d.topic, d.partition, d.offset, d.class, d.reason
                    );
                }
                eprintln!("{} dead letter(s)", letters.len());
            }
            Ok(ExitCode::SUCCESS)
        }
        DlqCommand::Show { config, id } => {
            let store = open(config)?;
            match store.dead_letter(*id)? {
                Some(d) => {
                    println!("{}", serde_json::to_string_pretty(&to_json(*id, &d, true))?);
                    Ok(ExitCode::SUCCESS)
                }
                None => {
                    anyhow::bail!("no dead letter with id {id}; `tally dlq list` shows the ids")
                }
            }
        }
    }
}

fn open(config: &std::path::Path) -> anyhow::Result<Store> {
    let settings = load(config)?;
    Store::open(&store_config(&settings)).context("opening the store")
}

/// Bytes as UTF-8 text when they are, else hex — never silently mangled.
fn bytes_json(b: &Option<Vec<u8>>) -> Value {
    match b {
        None => Value::Null,
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => json!(s),
            Err(_) => json!({ "hex": b.iter().map(|x| format!("{x:02x}")).collect::<String>() }),
        },
    }
}

fn ms(t: i64) -> Value {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(t).map_or(Value::Null, |d| {
        json!(d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    })
}

fn to_json(id: u64, d: &DeadLetter, full: bool) -> Value {
    let mut v = json!({
        "id": id,
        "route": d.route,
        "topic": d.topic,
        "partition": d.partition,
        "offset": d.offset,
        "key": bytes_json(&d.key),
        "reason": d.reason,
        "class": d.class,
        "attempts": d.attempts,
        "first_seen": ms(d.first_seen_ms),
        "last_seen": ms(d.last_seen_ms),
    });
    if full {
        v["timestamp"] = ms(d.timestamp_ms);
        v["headers"] = Value::Array(
            d.headers
                .iter()
                .map(|(k, val)| json!({ "key": k, "value": bytes_json(val) }))
                .collect(),
        );
        v["payload"] = bytes_json(&d.payload);
    }
    v
}
