//! `tally ids`: the tracking-ID (dedupe key) store — lookup, count, export, prune.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

use super::access::{self, Access};
use super::progress::Progress;
use super::{load, runtime};
use crate::admin::client::encode_segment;
use crate::admin::views::{self, RouteCount};

#[derive(Debug, clap::Args)]
pub struct IdsArgs {
    #[command(subcommand)]
    command: IdsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum IdsCommand {
    /// Find a tracking ID: which route, topic, partition and offset range delivered it, and when.
    Lookup {
        #[arg(long, short = 'c', env = "TALLY_CONFIG")]
        config: std::path::PathBuf,
        /// Only this route (default: every route in the config).
        #[arg(long)]
        route: Option<String>,
        /// The dedupe key, e.g. tenantId/subscriptionExternalKey/trackingId for killbill-usage.
        key: String,
        #[arg(long)]
        json: bool,
    },
    /// Count tracking IDs per route.
    Count {
        #[arg(long, short = 'c', env = "TALLY_CONFIG")]
        config: std::path::PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Export tracking IDs as JSON lines (oldest first) to stdout.
    Export {
        #[arg(long, short = 'c', env = "TALLY_CONFIG")]
        config: std::path::PathBuf,
        /// Only this route.
        #[arg(long)]
        route: Option<String>,
    },
    /// Drop tracking IDs committed longer ago than a retention (whole batches).
    Prune {
        #[arg(long, short = 'c', env = "TALLY_CONFIG")]
        config: std::path::PathBuf,
        /// e.g. "30d"; default: the config's store.retention.
        #[arg(long)]
        older_than: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

pub fn ids(args: &IdsArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        IdsCommand::Lookup {
            config,
            route,
            key,
            json,
        } => lookup(config, route.as_deref(), key, *json),
        IdsCommand::Count { config, json } => count(config, *json),
        IdsCommand::Export { config, route } => export(config, route.as_deref()),
        IdsCommand::Prune {
            config,
            older_than,
            json,
        } => prune(config, older_than.as_deref(), *json),
    }
}

fn lookup(
    config: &std::path::Path,
    route: Option<&str>,
    key: &str,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let settings = load(config)?;
    let routes: Vec<String> = match route {
        Some(r) => vec![r.to_string()],
        None => settings.routes.iter().map(|r| r.name.clone()).collect(),
    };
    let mut found: Vec<Value> = Vec::new();
    match access::open(&settings)? {
        Access::Store(store) => {
            for r in &routes {
                if let Some(loc) = store.lookup(r, key)? {
                    found.push(views::id_location(r, key, &loc));
                }
            }
        }
        Access::Daemon(client) => {
            let rt = runtime()?;
            for r in &routes {
                let path = format!("/v1/ids/{}/{}", encode_segment(r), encode_segment(key));
                match rt.block_on(client.get(&path)) {
                    Ok(b) => found
                        .push(serde_json::from_slice(&b).context("admin API: unexpected answer")?),
                    Err(crate::admin::ClientError::Status { status, .. }) if status == 404 => {}
                    Err(e) => {
                        return Err(e).context(
                            "the store is locked by the running daemon; asked its admin API",
                        );
                    }
                }
            }
        }
    }
    if found.is_empty() {
        eprintln!(
            "not found: {key:?} is not among the committed tracking IDs of route(s) {} \
             (never delivered, or pruned by retention)",
            routes.join(", ")
        );
        return Ok(ExitCode::from(1));
    }
    for v in &found {
        if json {
            println!("{v}");
            continue;
        }
        let s = |k: &str| {
            v[k].as_str()
                .map_or_else(|| v[k].to_string(), str::to_string)
        };
        println!("key          {}", s("key"));
        println!("route        {}", s("route"));
        println!("topic        {}", s("topic"));
        println!("partition    {}", s("partition"));
        println!(
            "offsets      {}..{} (committed batch {}, delivered within this range)",
            s("first_offset"),
            s("next_offset"),
            s("batch")
        );
        println!("committed    {}", s("committed_at"));
    }
    Ok(ExitCode::SUCCESS)
}

fn count(config: &std::path::Path, json: bool) -> anyhow::Result<ExitCode> {
    let settings = load(config)?;
    let rows: Vec<RouteCount> = match access::open(&settings)? {
        Access::Store(store) => views::route_counts(&store.batches()?),
        Access::Daemon(client) => access::daemon_get(&client, "/v1/ids")?,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<20} {:>12} {:>9}  {:<20}  NEWEST",
        "ROUTE", "IDS", "BATCHES", "OLDEST"
    );
    let dash = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
    for r in &rows {
        println!(
            "{:<20} {:>12} {:>9}  {:<20}  {}",
            r.route,
            r.ids,
            r.batches,
            dash(&r.oldest),
            dash(&r.newest)
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn export(config: &std::path::Path, route: Option<&str>) -> anyhow::Result<ExitCode> {
    let settings = load(config)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut progress = Progress::new("exporting tracking IDs", true);
    let mut write_err: Option<std::io::Error> = None;
    let n = match access::open(&settings)? {
        Access::Store(store) => views::export_ids(
            &store,
            route,
            |line| match writeln!(out, "{line}") {
                Ok(()) => true,
                Err(e) => {
                    write_err = Some(e);
                    false
                }
            },
            |done, total| progress.update(done, total),
        )?,
        Access::Daemon(client) => {
            let rt = runtime()?;
            let path = format!("/v1/ids/export{}", access::query(&[("route", route)]));
            let mut lines = 0u64;
            rt.block_on(client.get_streaming(&path, |chunk| {
                if write_err.is_none() {
                    lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
                    if let Err(e) = out.write_all(chunk) {
                        write_err = Some(e);
                    }
                    progress.update(lines, lines);
                }
            }))
            .context("the store is locked by the running daemon; asked its admin API")?;
            lines
        }
    };
    progress.finish();
    match write_err {
        // A closed pipe (`| head`) is a normal end for an export.
        Some(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(ExitCode::SUCCESS),
        Some(e) => return Err(e).context("writing the export"),
        None => {}
    }
    if let Err(e) = out.flush()
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        return Err(e).context("writing the export");
    }
    eprintln!("exported {n} tracking ID(s)");
    Ok(ExitCode::SUCCESS)
}

fn prune(
    config: &std::path::Path,
    older_than: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let settings = load(config)?;
    let age: Duration = match older_than {
        Some(t) => humantime::parse_duration(t).map_err(|e| {
            crate::config::ConfigError::invalid(
                "--older-than",
                format!("\"{t}\" is not a duration ({e})"),
            )
        })?,
        None => settings.store.retention.ok_or_else(|| {
            crate::config::ConfigError::invalid(
                "--older-than",
                "give --older-than (e.g. 30d) or set store.retention in the config",
            )
        })?,
    };
    let result: Value = match access::open(&settings)? {
        Access::Store(store) => {
            let mut progress = Progress::new("pruning", false);
            let total = store.batches()?.len() as u64;
            let stats =
                store.prune_older_than_with(age, |s| progress.update(s.batches as u64, total))?;
            progress.finish();
            // The old index snapshot covers the pruned batches: write the
            // pruned index, so the daemon's next start need not rebuild it.
            if stats.batches > 0 {
                store.close()?;
            }
            serde_json::json!({
                "batches": stats.batches,
                "ids": stats.ids,
                "cutoff": views::ms(stats.cutoff_ms),
            })
        }
        Access::Daemon(client) => {
            let rt = runtime()?;
            let age_text = humantime::format_duration(age).to_string();
            let path = format!(
                "/v1/ids/prune{}",
                access::query(&[("older_than", Some(&age_text))])
            );
            let b = rt
                .block_on(client.post(&path, Default::default()))
                .context("the store is locked by the running daemon; asked its admin API to prune (needs the admin token in this environment)")?;
            serde_json::from_slice(&b).context("admin API: unexpected answer")?
        }
    };
    if json {
        println!("{result}");
    } else {
        println!(
            "pruned {} tracking ID(s) in {} batch(es) committed before {}",
            result["ids"],
            result["batches"],
            result["cutoff"].as_str().unwrap_or("-")
        );
    }
    Ok(ExitCode::SUCCESS)
}
