//! `tally reset-offsets`: move committed offsets, like kafka-consumer-groups.sh
//! --reset-offsets. A dry run (prints before/after) unless `--execute`; refuses
//! while the daemon holds the store.
//!
//! Rewinding replays records: those whose tracking IDs are still in the store
//! are skipped as duplicates (unless pruned, or the route has `dedupe = "none"`).

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use super::access;
use super::{load, runtime};
use crate::config::{ConfigError, Settings};
use crate::kafka::{ClusterClient, OffsetSpec, PartitionConsumer};
use crate::pipeline::kafka_config;

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("target").required(true).multiple(false)))]
pub struct ResetOffsetsArgs {
    #[arg(long, short = 'c', env = "TALLY_CONFIG")]
    config: std::path::PathBuf,
    /// Topic, optionally with partitions: `T` or `T:0,2,5`. Repeatable.
    #[arg(long, required = true)]
    topic: Vec<String>,
    /// Only these partitions (with a single --topic).
    #[arg(long)]
    partition: Vec<i32>,
    /// The log start offset.
    #[arg(long, group = "target")]
    to_earliest: bool,
    /// The log end (the fetch response's high watermark / last stable offset).
    #[arg(long, group = "target")]
    to_latest: bool,
    /// The committed offset (a no-op; shows where partitions are).
    #[arg(long, group = "target")]
    to_current: bool,
    /// An absolute offset (clamped to the log's range).
    #[arg(long, group = "target", value_name = "N")]
    to_offset: Option<i64>,
    /// Move by N (negative rewinds), clamped to the log's range.
    #[arg(long, group = "target", value_name = "N", allow_hyphen_values = true)]
    shift_by: Option<i64>,
    /// First offset with a timestamp at or after TS (RFC 3339, `YYYY-MM-DDTHH:MM:SS` as UTC, or epoch ms).
    #[arg(long, group = "target", value_name = "TS")]
    to_datetime: Option<String>,
    /// First offset with a timestamp at or after now minus D (e.g. 1h30m, 2d).
    #[arg(long, group = "target", value_name = "D")]
    by_duration: Option<String>,
    /// Apply the change (default: dry run).
    #[arg(long)]
    execute: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy)]
enum Target {
    Earliest,
    Latest,
    Current,
    Offset(i64),
    Shift(i64),
    Timestamp(i64),
}

#[derive(Debug, Serialize)]
struct Row {
    topic: String,
    partition: i32,
    current: Option<i64>,
    new: Option<i64>,
    log_start: i64,
    log_end: i64,
    note: Option<String>,
}

pub fn reset_offsets(args: &ResetOffsetsArgs) -> anyhow::Result<ExitCode> {
    let settings = load(&args.config)?;
    let target = target(args)?;
    let wanted = topics(args, &settings)?;
    let store = access::open_exclusive(&settings, "reset-offsets")?;
    let rt = runtime()?;
    let client = ClusterClient::new(kafka_config(&settings.kafka)?);
    let mut rows = Vec::new();
    for (topic, explicit) in &wanted {
        let partitions: Vec<i32> = match explicit {
            Some(ps) => ps.clone(),
            None => {
                let md = rt
                    .block_on(client.metadata(std::slice::from_ref(topic)))
                    .context("reading topic metadata (the broker is needed to resolve offsets)")?;
                let tm = md
                    .topics
                    .get(topic)
                    .filter(|t| t.error.is_none())
                    .with_context(|| format!("topic {topic} is not on the broker"))?;
                tm.partitions
                    .keys()
                    .copied()
                    // In group mode any partition may come to this store.
                    .filter(|p| settings.assignment.owns(topic, *p).unwrap_or(true))
                    .collect()
            }
        };
        for p in partitions {
            let current = store.offset(topic, p)?.map(|e| e.next_offset);
            let mut consumer = client.partition_consumer(topic, p);
            let (start, end) = rt
                .block_on(log_range(&mut consumer, settings.kafka.request_timeout))
                .with_context(|| format!("reading the log range of {topic}/{p}"))?;
            let (new, note) = rt
                .block_on(resolve(
                    target,
                    current,
                    start,
                    end,
                    &mut consumer,
                    settings.kafka.request_timeout,
                ))
                .with_context(|| format!("resolving the new offset of {topic}/{p}"))?;
            rows.push(Row {
                topic: topic.clone(),
                partition: p,
                current,
                new,
                log_start: start,
                log_end: end,
                note,
            });
        }
    }
    if args.execute {
        for r in &rows {
            if let Some(new) = r.new
                && r.current != Some(new)
            {
                store.set_offset(&r.topic, r.partition, new)?;
                tracing::warn!(
                    topic = %r.topic, partition = r.partition,
                    from = r.current.unwrap_or(-1), to = new, "offset reset"
                );
            }
        }
    }
    print(&rows, args)?;
    if let Some(g) = settings.assignment.group() {
        eprintln!(
            "note: group mode: this changed this instance's store only. A member taking a partition \
             over starts from the newer of its store's offset and group {:?}'s committed offset, so \
             to move back, also reset the group's offsets (kafka-consumer-groups.sh --reset-offsets \
             --group {} with every member stopped) and run this on every member's store",
            g.group_id, g.group_id
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn print(rows: &[Row], args: &ResetOffsetsArgs) -> anyhow::Result<()> {
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "executed": args.execute,
                "partitions": rows,
            }))?
        );
    } else {
        println!(
            "{:<40} {:>9} {:>12} {:>12} {:>10} {:>12} {:>12}  NOTE",
            "TOPIC", "PARTITION", "CURRENT", "NEW-OFFSET", "CHANGE", "LOG-START", "LOG-END"
        );
        let dash = |o: Option<i64>| o.map_or_else(|| "-".to_string(), |v| v.to_string());
        for r in rows {
            let change = match (r.current, r.new) {
                (Some(c), Some(n)) => format!("{:+}", n - c),
                _ => "-".into(),
            };
            println!(
                "{:<40} {:>9} {:>12} {:>12} {:>10} {:>12} {:>12}  {}",
                r.topic,
                r.partition,
                dash(r.current),
                dash(r.new),
                change,
                r.log_start,
                r.log_end,
                r.note.as_deref().unwrap_or("")
            );
        }
    }
    if args.execute {
        eprintln!("executed: committed offsets changed; start the daemon to resume from them");
    } else {
        eprintln!(
            "dry run: nothing changed; add --execute to apply. Rewound records are read again, and \
             those whose tracking IDs are still stored are skipped as duplicates"
        );
    }
    Ok(())
}

fn target(args: &ResetOffsetsArgs) -> anyhow::Result<Target> {
    Ok(if args.to_earliest {
        Target::Earliest
    } else if args.to_latest {
        Target::Latest
    } else if args.to_current {
        Target::Current
    } else if let Some(n) = args.to_offset {
        Target::Offset(n)
    } else if let Some(n) = args.shift_by {
        Target::Shift(n)
    } else if let Some(ts) = &args.to_datetime {
        Target::Timestamp(parse_datetime(ts)?)
    } else if let Some(d) = &args.by_duration {
        let d = humantime::parse_duration(d).map_err(|e| {
            ConfigError::invalid(
                "--by-duration",
                format!("\"{d}\" is not a duration ({e}); e.g. 1h30m, 2d"),
            )
        })?;
        let now = chrono::Utc::now().timestamp_millis();
        Target::Timestamp(now.saturating_sub(d.as_millis().min(i64::MAX as u128) as i64))
    } else {
        return Err(ConfigError::invalid(
            "reset-offsets",
            "choose one --to-*/--shift-by/--by-duration",
        )
        .into());
    })
}

fn parse_datetime(ts: &str) -> Result<i64, ConfigError> {
    if let Ok(ms) = ts.parse::<i64>() {
        return Ok(ms);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(ts) {
        return Ok(t.timestamp_millis());
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M:%S",
    ] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(ts, fmt) {
            return Ok(t.and_utc().timestamp_millis());
        }
    }
    Err(ConfigError::invalid(
        "--to-datetime",
        format!(
            "\"{ts}\" is not a time; write 2024-05-01T12:00:00Z, 2024-05-01T12:00:00 (UTC) or epoch ms"
        ),
    ))
}

/// A topic and, when given, its partitions.
type TopicSpec = (String, Option<Vec<i32>>);

/// `(topic, explicit partitions)`; every topic must be one a route consumes.
fn topics(args: &ResetOffsetsArgs, settings: &Settings) -> Result<Vec<TopicSpec>, ConfigError> {
    let mut out = Vec::new();
    for spec in &args.topic {
        let (topic, parts) = match spec.split_once(':') {
            Some((t, ps)) => {
                let mut set = BTreeSet::new();
                for p in ps.split(',').filter(|p| !p.trim().is_empty()) {
                    let p: i32 = p.trim().parse().map_err(|_| {
                        ConfigError::invalid(
                            "--topic",
                            format!("\"{spec}\": \"{p}\" is not a partition number"),
                        )
                    })?;
                    set.insert(p);
                }
                (t.to_string(), Some(set.into_iter().collect::<Vec<_>>()))
            }
            None => (spec.clone(), None),
        };
        if settings.route_for_topic(&topic).is_none() {
            return Err(ConfigError::invalid(
                "--topic",
                format!("no route in this config consumes topic {topic:?}"),
            ));
        }
        out.push((topic, parts));
    }
    if !args.partition.is_empty() {
        if out.len() != 1 || out[0].1.is_some() {
            return Err(ConfigError::invalid(
                "--partition",
                "use it with exactly one --topic T (or write --topic T:0,1)",
            ));
        }
        let set: BTreeSet<i32> = args.partition.iter().copied().collect();
        out[0].1 = Some(set.into_iter().collect());
    }
    Ok(out)
}

/// (log start, log end): ListOffsets earliest, and the end from a fetch
/// response (ListOffsets "latest" is unreliable on some brokers).
async fn log_range(
    consumer: &mut PartitionConsumer,
    timeout: Duration,
) -> anyhow::Result<(i64, i64)> {
    let run = async {
        let start = consumer.list_offset(OffsetSpec::Earliest).await?;
        let f = consumer
            .fetch(start, 1024, Duration::from_millis(10))
            .await?;
        let end = if f.last_stable_offset >= 0 {
            f.last_stable_offset
                .min(f.high_watermark.max(f.last_stable_offset))
        } else {
            f.high_watermark
        };
        Ok::<_, crate::kafka::KafkaError>((start, end.max(start)))
    };
    Ok(tokio::time::timeout(timeout * 2, run)
        .await
        .context("timed out")??)
}

async fn resolve(
    target: Target,
    current: Option<i64>,
    start: i64,
    end: i64,
    consumer: &mut PartitionConsumer,
    timeout: Duration,
) -> anyhow::Result<(Option<i64>, Option<String>)> {
    let clamp = |n: i64| {
        if n < start {
            (start, Some(format!("{n} is before the log start: clamped")))
        } else if n > end {
            (end, Some(format!("{n} is past the log end: clamped")))
        } else {
            (n, None)
        }
    };
    let (n, note) = match target {
        Target::Earliest => (start, None),
        Target::Latest => (end, None),
        Target::Current => match current {
            Some(c) => (c, None),
            None => return Ok((None, Some("no committed offset".into()))),
        },
        Target::Offset(n) => clamp(n),
        Target::Shift(by) => match current {
            Some(c) => clamp(c.saturating_add(by)),
            None => return Ok((None, Some("no committed offset to shift from".into()))),
        },
        Target::Timestamp(ts) if ts > chrono::Utc::now().timestamp_millis() => {
            // No record can be at or after a future time: the log end. Asked
            // instead, some brokers (Tansu) answer offset 0.
            (end, Some("time is in the future: log end".into()))
        }
        Target::Timestamp(ts) => {
            let o = tokio::time::timeout(timeout, consumer.list_offset(OffsetSpec::Timestamp(ts)))
                .await
                .context("ListOffsets by time timed out")??;
            if o < 0 {
                (end, Some("no record at or after that time: log end".into()))
            } else {
                clamp(o)
            }
        }
    };
    Ok((Some(n), note))
}
