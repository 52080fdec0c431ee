//! `tally dlq`: the dead letters — every record tally did not deliver, and why.

use std::process::ExitCode;

use anyhow::Context;
use serde_json::Value;

use super::access::{self, Access};
use super::{exit, load, runtime};
use crate::admin::views;
use crate::config::Settings;
use crate::dlq::ReplayOutcome;
use crate::pipeline::store_config;
use crate::store::{DeadLetter, Store, StoreError};

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
    /// Run dead letters through their route again with the current config
    /// (decoder, dedupe, sink). Needs the daemon stopped. Exits 1 if any
    /// still fail (they stay, with attempts + 1 and the new reason).
    Replay {
        #[arg(long, short = 'c', env = "TALLY_CONFIG")]
        config: std::path::PathBuf,
        /// The dead letter to replay (see `tally dlq list`).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<u64>,
        /// Replay every dead letter (of `--route`, if given).
        #[arg(long)]
        all: bool,
        /// Only this route's dead letters.
        #[arg(long)]
        route: Option<String>,
    },
    /// Delete dead letters for good. Needs the daemon stopped.
    Purge {
        #[arg(long, short = 'c', env = "TALLY_CONFIG")]
        config: std::path::PathBuf,
        /// The dead letter to delete.
        #[arg(required_unless_present = "older_than", conflicts_with = "older_than")]
        id: Option<u64>,
        /// Delete those last seen longer ago than this, e.g. "30d", "12h".
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: Option<std::time::Duration>,
        /// Only this route's dead letters.
        #[arg(long)]
        route: Option<String>,
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
            let settings = load(config)?;
            let letters: Vec<Value> = match access::open(&settings)? {
                Access::Store(store) => {
                    views::dead_letter_list(&store, route.as_deref(), reason.as_deref())?
                }
                Access::Daemon(client) => {
                    let q = access::query(&[
                        ("route", route.as_deref()),
                        ("reason", reason.as_deref()),
                    ]);
                    access::daemon_get(&client, &format!("/v1/dead-letters{q}"))?
                }
            };
            if *json {
                for d in &letters {
                    println!("{d}");
                }
            } else {
                println!(
                    "{:>6}  {:<12} {:<32} {:>5} {:>10}  {:<10} REASON",
                    "ID", "ROUTE", "TOPIC", "PART", "OFFSET", "CLASS"
                );
                let s = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
                for d in &letters {
                    println!(
                        "{:>6}  {:<12} {:<32} {:>5} {:>10}  {:<10} {}",
                        s(&d["id"]),
                        s(&d["route"]),
                        s(&d["topic"]),
                        s(&d["partition"]),
                        s(&d["offset"]),
                        s(&d["class"]),
                        s(&d["reason"])
                    );
                }
                eprintln!("{} dead letter(s)", letters.len());
            }
            Ok(ExitCode::SUCCESS)
        }
        DlqCommand::Show { config, id } => {
            let settings = load(config)?;
            let found: Option<Value> = match access::open(&settings)? {
                Access::Store(store) => store
                    .dead_letter(*id)?
                    .map(|d| views::dead_letter(*id, &d, true)),
                Access::Daemon(client) => Some(access::daemon_get(
                    &client,
                    &format!("/v1/dead-letters/{id}"),
                )?),
            };
            match found {
                Some(v) => {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                    Ok(ExitCode::SUCCESS)
                }
                None => {
                    anyhow::bail!("no dead letter with id {id}; `tally dlq list` shows the ids")
                }
            }
        }
        DlqCommand::Replay {
            config,
            id,
            all: _,
            route,
        } => replay(config, *id, route.as_deref()),
        DlqCommand::Purge {
            config,
            id,
            older_than,
            route,
        } => purge(config, *id, *older_than, route.as_deref()),
    }
}

fn replay(
    config: &std::path::Path,
    id: Option<u64>,
    route: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let settings = load(config)?;
    let store = open_exclusive(&settings, "replay")?;
    let letters = select(&store, id, route)?;
    let rt = runtime()?;
    let summary = rt
        .block_on(crate::dlq::replay(&settings, &store, letters))
        .context("dlq replay")?;
    for (id, outcome) in &summary.outcomes {
        match outcome {
            ReplayOutcome::Replayed => println!("{id:>6}  replayed"),
            ReplayOutcome::Duplicate => println!("{id:>6}  duplicate (already delivered)"),
            ReplayOutcome::StillFailing { class, reason } => {
                println!("{id:>6}  still failing ({class}): {reason}")
            }
        }
    }
    println!(
        "replayed {}, duplicate {}, still failing {}",
        summary.replayed(),
        summary.duplicates(),
        summary.still_failing()
    );
    Ok(if summary.still_failing() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(exit::FAILURE)
    })
}

fn purge(
    config: &std::path::Path,
    id: Option<u64>,
    older_than: Option<std::time::Duration>,
    route: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let settings = load(config)?;
    let store = open_exclusive(&settings, "purge")?;
    let mut letters = select(&store, id, route)?;
    if let Some(age) = older_than {
        let cutoff = chrono::Utc::now().timestamp_millis()
            - i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
        letters.retain(|(_, d)| d.last_seen_ms < cutoff);
    }
    let seqs: Vec<u64> = letters.iter().map(|(s, _)| *s).collect();
    let n = store.remove_dead_letters(&seqs)?;
    println!("purged {n} dead letter(s)");
    Ok(ExitCode::SUCCESS)
}

/// One letter by id (an error if it does not exist), or all, optionally of one route.
fn select(
    store: &Store,
    id: Option<u64>,
    route: Option<&str>,
) -> anyhow::Result<Vec<(u64, DeadLetter)>> {
    let letters = match id {
        Some(id) => match store.dead_letter(id)? {
            Some(d) => vec![(id, d)],
            None => anyhow::bail!("no dead letter with id {id}; `tally dlq list` shows the ids"),
        },
        None => store.dead_letters()?,
    };
    Ok(letters
        .into_iter()
        .filter(|(_, d)| route.is_none_or(|r| d.route == r))
        .collect())
}

/// Writing commands need the store to themselves: the daemon's commits and
/// ours must not interleave. Say so plainly when it is held.
fn open_exclusive(settings: &Settings, what: &str) -> anyhow::Result<Store> {
    match Store::open(&store_config(settings)) {
        Ok(s) => Ok(s),
        Err(e @ StoreError::Locked { .. }) => Err(anyhow::Error::new(e).context(format!(
            "dlq {what} needs the store to itself: stop the running tally daemon \
             (SIGTERM drains and commits), then run `tally dlq {what}` again"
        ))),
        Err(e) => Err(anyhow::Error::new(e).context("opening the store")),
    }
}
