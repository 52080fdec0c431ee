//! `tally dlq`: the dead letters — every record tally did not deliver, and why.

use std::process::ExitCode;

use serde_json::Value;

use super::access::{self, Access};
use super::load;
use crate::admin::views;

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
    }
}
