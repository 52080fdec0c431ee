//! `tally check`: validate the config and print it resolved; with
//! `--connect`, also probe the broker and the sinks.

use std::process::ExitCode;

use super::{load, runtime};
use crate::config::{Settings, SinkKind};
use crate::kafka::group::GroupCoordinator;
use crate::kafka::{ClusterClient, ClusterMetadata, error_name};
use crate::pipeline::kafka_config;
use crate::sink::probe::ProbeReport;

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    #[arg(long, short = 'c', env = "TALLY_CONFIG")]
    config: std::path::PathBuf,
    /// Also connect: broker metadata for every routed topic, and each sink.
    #[arg(long)]
    connect: bool,
}

pub fn check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let settings = load(&args.config)?;
    // Secrets are only ever references (`*_env`, `*_file`) in Settings, so
    // printing the resolved settings cannot leak one.
    let text = toml::to_string_pretty(&settings)?;
    println!(
        "# {} is valid; resolved settings:\n{text}",
        args.config.display()
    );
    if !args.connect {
        return Ok(ExitCode::SUCCESS);
    }
    let problems = runtime()?.block_on(probe(&settings));
    if problems == 0 {
        println!("# connect: ok");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("# connect: {problems} problem(s)");
        Ok(ExitCode::from(super::exit::FAILURE))
    }
}

/// Print one line per probe; return how many failed.
async fn probe(settings: &Settings) -> usize {
    let mut problems = 0;
    if let Some(tls) = settings.admin.as_ref().and_then(|a| a.tls.as_ref()) {
        // What `tally run` will load for the admin server, and the CLI's side.
        let server =
            crate::tls::server_config(&tls.cert_file, &tls.key_file, tls.client_ca_file.as_deref());
        let client = settings.admin.as_ref().map(crate::admin::AdminClient::new);
        match (server, client) {
            (Ok(_), Some(Ok(_)) | None) => println!(
                "# admin: ok (https{})",
                if tls.client_ca_file.is_some() {
                    ", client certificates required"
                } else {
                    ""
                }
            ),
            (Err(e), _) => {
                println!("# admin: FAILED ([admin.tls] {e})");
                problems += 1;
            }
            (_, Some(Err(e))) => {
                println!("# admin: FAILED (the CLI's side: {e})");
                problems += 1;
            }
        }
    }
    let client = match kafka_config(&settings.kafka) {
        Ok(cfg) => ClusterClient::new(cfg),
        Err(e) => {
            println!("# broker: FAILED ({e})");
            return problems + 1;
        }
    };
    let topics = settings.all_topics();
    let mut asked = topics.clone();
    asked.extend(
        settings
            .routes
            .iter()
            .filter_map(|r| r.changelog_topic.clone()),
    );
    match client.metadata(&asked).await {
        Ok(md) => {
            println!(
                "# broker: ok ({} broker(s): {})",
                md.brokers.len(),
                md.brokers.values().cloned().collect::<Vec<_>>().join(", ")
            );
            // Changelog topics first: their lines name what to create.
            for route in &settings.routes {
                if let Some(line) = changelog_line(route, &md) {
                    problems += usize::from(line.contains("FAILED"));
                    println!("{line}");
                }
            }
            for topic in &topics {
                match md.topics.get(topic) {
                    Some(tm) if tm.error.is_none() => {
                        let owned = match &settings.assignment.group() {
                            Some(g) => format!("assigned at run time by group {:?}", g.group_id),
                            None => {
                                let n = tm
                                    .partitions
                                    .keys()
                                    .filter(|p| settings.assignment.owns(topic, **p) == Some(true))
                                    .count();
                                format!("{n} owned by this member")
                            }
                        };
                        println!(
                            "# topic {topic}: ok ({} partitions, {owned})",
                            tm.partitions.len()
                        );
                    }
                    Some(tm) => {
                        problems += 1;
                        println!(
                            "# topic {topic}: FAILED ({})",
                            tm.error.map_or("unknown error", error_name)
                        );
                    }
                    None => {
                        problems += 1;
                        println!("# topic {topic}: FAILED (not in the broker's metadata)");
                    }
                }
            }
            if let Some(g) = settings.assignment.group() {
                problems += probe_group(&client, &g.group_id, &md).await;
            }
        }
        Err(e) => {
            problems += 1;
            println!("# broker: FAILED ({e})");
        }
    }
    for route in &settings.routes {
        match route.sink {
            SinkKind::Killbill => {
                let Some(cfg) = &settings.sinks.killbill else {
                    continue;
                };
                let report = match crate::sink::killbill::KillbillSink::new(cfg) {
                    Ok(sink) => sink.probe().await,
                    Err(e) => ProbeReport::failed(e),
                };
                problems += report_sink("killbill", &route.name, &report);
            }
            SinkKind::Amqp => {
                let Some(cfg) = &settings.sinks.amqp else {
                    continue;
                };
                let report = match crate::sink::amqp::AmqpSink::new(cfg) {
                    Ok(sink) => sink.probe().await,
                    Err(e) => ProbeReport::failed(e),
                };
                problems += report_sink("amqp", &route.name, &report);
            }
            SinkKind::Http => {
                let Some(cfg) = &settings.sinks.http else {
                    continue;
                };
                let report = match crate::sink::http::HttpSink::new(cfg) {
                    Ok(sink) => sink.probe().await,
                    Err(e) => ProbeReport::failed(e),
                };
                problems += report_sink("http", &route.name, &report);
            }
            SinkKind::File => {
                let Some(file) = &settings.sinks.file else {
                    continue;
                };
                match std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(&file.path)
                {
                    Ok(_) => println!("# sink file ({}): ok, writable", file.path.display()),
                    Err(e) => {
                        problems += 1;
                        println!("# sink file ({}): FAILED ({e})", file.path.display());
                    }
                }
            }
        }
    }
    problems
}

/// Finds the group's coordinator and reads the group's committed offsets
/// (read-only: nothing joins); 1 when that fails.
async fn probe_group(client: &ClusterClient, group_id: &str, md: &ClusterMetadata) -> usize {
    let wanted: Vec<(String, Vec<i32>)> = md
        .topics
        .iter()
        .filter(|(_, tm)| tm.error.is_none())
        .map(|(t, tm)| (t.clone(), tm.partitions.keys().copied().collect()))
        .collect();
    let mut coordinator = GroupCoordinator::new(client.clone(), group_id);
    match coordinator.committed(&wanted).await {
        Ok(committed) => {
            println!(
                "# group {group_id}: ok (coordinator {}, committed offsets for {} partition(s))",
                coordinator.coordinator().unwrap_or("?"),
                committed.len()
            );
            0
        }
        Err(e) => {
            println!("# group {group_id}: FAILED ({e})");
            1
        }
    }
}

/// Prints one sink's probe line; 1 when it is a problem.
fn report_sink(kind: &str, route: &str, report: &ProbeReport) -> usize {
    println!("# sink {kind} (route {route}): {}", report.line);
    usize::from(!report.ok)
}

/// The changelog topic must exist with a partition for every source
/// partition (what a partition checks again before it restores).
fn changelog_line(
    route: &crate::config::Route,
    md: &crate::kafka::ClusterMetadata,
) -> Option<String> {
    let cl = route.changelog_topic.as_deref()?;
    let count = |t: &str| {
        md.topics
            .get(t)
            .filter(|m| m.error.is_none())
            .map(|m| m.partitions.len())
    };
    let needed = route
        .topics
        .iter()
        .filter_map(|t| count(t))
        .max()
        .unwrap_or(0);
    let head = format!("# changelog topic {cl} (route {})", route.name);
    Some(match count(cl) {
        None => format!(
            "{head}: FAILED (does not exist; create it with at least {needed} partitions, \
             cleanup.policy=delete, retention.ms no shorter than store.retention)"
        ),
        Some(n) if n < needed => format!(
            "{head}: FAILED ({n} partitions, the route's topics have up to {needed}: \
             add partitions, partition p records into changelog partition p)"
        ),
        Some(n) => format!("{head}: ok ({n} partitions, the route's topics need {needed})"),
    })
}
