//! `tally dlq`: the dead letters — every record tally did not deliver, and why.

use std::process::ExitCode;

use anyhow::Context;
use serde_json::{Value, json};

use super::access::{self, Access};
use super::{exit, load, runtime};
use crate::admin::{AdminClient, views};
use crate::config::Settings;
use crate::pipeline::store_config;
use crate::store::{Store, StoreError};

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
    /// (decoder, dedupe, sink). On a running daemon, through its admin API
    /// (needs `[admin]` with a token). Exits 1 if any still fail (they stay,
    /// with attempts + 1 and the new reason).
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
    /// Delete dead letters for good (through the admin API on a running daemon).
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
    let summary = match open_for_write(&settings, "replay")? {
        Access::Store(store) => {
            let letters = crate::dlq::select(&store, id, route)?;
            let rt = runtime()?;
            let summary = rt
                .block_on(crate::dlq::replay(&settings, &store, letters))
                .context("dlq replay")?;
            views::replay_summary(&summary)
        }
        Access::Daemon(client) => access::daemon_post(
            &client,
            "/v1/dead-letters/replay",
            &json!({ "id": id, "all": id.is_none(), "route": route }),
        )?,
    };
    let s = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
    for o in summary["outcomes"].as_array().into_iter().flatten() {
        let id = s(&o["id"]);
        match o["outcome"].as_str() {
            Some("replayed") => println!("{id:>6}  replayed"),
            Some("duplicate") => println!("{id:>6}  duplicate (already delivered)"),
            _ => println!(
                "{id:>6}  still failing ({}): {}",
                s(&o["class"]),
                s(&o["reason"])
            ),
        }
    }
    let still_failing = summary["still_failing"].as_u64().unwrap_or(0);
    println!(
        "replayed {}, duplicate {}, still failing {still_failing}",
        s(&summary["replayed"]),
        s(&summary["duplicate"]),
    );
    Ok(if still_failing == 0 {
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
    let purged = match open_for_write(&settings, "purge")? {
        Access::Store(store) => crate::dlq::purge(&store, id, older_than, route)?,
        Access::Daemon(client) => {
            let older_than = older_than.map(|d| humantime::format_duration(d).to_string());
            let answer: Value = access::daemon_post(
                &client,
                "/v1/dead-letters/purge",
                &json!({ "id": id, "older_than": older_than, "route": route }),
            )?;
            answer["purged"].as_u64().unwrap_or(0) as usize
        }
    };
    println!("purged {purged} dead letter(s)");
    Ok(ExitCode::SUCCESS)
}

/// Writing commands need the store to themselves (the daemon's commits and
/// ours must not interleave), or they ask the running daemon to do the work
/// through its admin API. Without `[admin]`, say plainly what to do.
fn open_for_write(settings: &Settings, what: &str) -> anyhow::Result<Access> {
    match (Store::open(&store_config(settings)), &settings.admin) {
        (Ok(s), _) => Ok(Access::Store(s)),
        (Err(StoreError::Locked { .. }), Some(admin)) => {
            Ok(Access::Daemon(AdminClient::new(admin)?))
        }
        (Err(e @ StoreError::Locked { .. }), None) => Err(anyhow::Error::new(e).context(format!(
            "dlq {what} needs the store to itself or the daemon's admin API: stop the running \
             tally daemon (SIGTERM drains and commits) and run `tally dlq {what}` again, or \
             configure [admin] (listen, token_env) so the daemon does it"
        ))),
        (Err(e), _) => Err(anyhow::Error::new(e).context("opening the store")),
    }
}
