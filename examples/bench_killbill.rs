//! Kill Bill sink throughput: records/s from Kafka into the Kill Bill double
//! with added latency per request, beside a one-request-at-a-time loop (what
//! the original Kill Bill Kafka plugin does) against the same double.
//!
//! Run through `scripts/bench-killbill.sh` (broker, tools, release build):
//!
//! ```sh
//! scripts/bench-killbill.sh [EVENTS] [LATENCY_MS] [MAX_IN_FLIGHT...]
//! ```
//!
//! Needs TALLY_TEST_BROKER, TALLY_TEST_PYTHON, TALLY_TEST_KAFKA_TOOL and
//! TALLY_BIN (the release binary).
//!
//! `bench_killbill row TOPIC EVENTS_FILE LATENCY_MS LIMIT` is the Kill Bill
//! row of `scripts/bench.sh`: tally from an existing topic (the events of
//! EVENTS_FILE) into the double until LIMIT records are accepted; prints one
//! JSON line with the wall time and tally's own CPU seconds and peak RSS
//! (read from /proc when the LIMIT-th record was accepted).

#[path = "../tests/support/killbill_double.rs"]
mod killbill_double;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use killbill_double::{KillbillDouble, sink_toml};

const TENANTS: [&str; 2] = [
    "0d96d663-00c1-4ff7-8324-d97cc551d6b3",
    "6f1e0a52-9b7d-4c1e-a3f5-2d8b7c9e4f10",
];

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn env(name: &str) -> Result<String> {
    std::env::var(name)
        .map_err(|_| format!("{name} is not set (use scripts/bench-killbill.sh)").into())
}

fn kafka_tool(args: &[&str], stdin: Option<&[u8]>) -> Result<String> {
    let mut child = Command::new(env("TALLY_TEST_PYTHON")?)
        .arg(env("TALLY_TEST_KAFKA_TOOL")?)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    // Dropping the pipe (with or without input) closes the tool's stdin.
    if let (Some(mut pipe), Some(input)) = (child.stdin.take(), stdin) {
        pipe.write_all(input)?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(format!("kafka_tool {args:?} failed: {}", out.status).into());
    }
    Ok(String::from_utf8(out.stdout)?)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("row") {
        return bench_row(&args[1..]);
    }
    let events: usize = args.first().map_or(Ok(50_000), |a| a.parse())?;
    let latency = Duration::from_millis(args.get(1).map_or(Ok(5), |a| a.parse())?);
    let in_flight: Vec<usize> = if args.len() > 2 {
        args[2..]
            .iter()
            .map(|a| a.parse())
            .collect::<std::result::Result<_, _>>()?
    } else {
        vec![64]
    };
    let broker = env("TALLY_TEST_BROKER")?;
    let tally = env("TALLY_BIN")?;

    let lines = kafka_tool(
        &[
            "gen-usage",
            "--count",
            &events.to_string(),
            "--dup-ratio",
            "0",
            "--tenants",
            "2",
            "--seed",
            "99",
        ],
        None,
    )?;
    let pairs = subscriptions(&lines);

    println!("# Kill Bill sink benchmark: {events} events, {latency:?} added latency per request");
    let baseline = sequential_baseline(latency)?;
    println!("one request at a time: {baseline:.0} records/s");

    for &n in &in_flight {
        let double = KillbillDouble::with_tenants(&TENANTS);
        for (t, s) in &pairs {
            double.add_subscription(t, s);
        }
        double.set_latency(latency);
        let topic = format!("bench-kb-{}-{n}", std::process::id());
        kafka_tool(
            &[
                "create-topic",
                "--broker",
                &broker,
                "--topic",
                &topic,
                "--partitions",
                "4",
            ],
            None,
        )?;
        let t_produce = Instant::now();
        kafka_tool(
            &[
                "produce",
                "--broker",
                &broker,
                "--topic",
                &topic,
                "--key-pointer",
                "/trackingId",
            ],
            Some(lines.as_bytes()),
        )?;
        let produce_s = t_produce.elapsed().as_secs_f64();

        let dir = tempfile::tempdir()?;
        let config = write_config(dir.path(), &double, &broker, &topic, n)?;
        let (cfg_envs_text, envs) = config;
        let mut cmd = Command::new(&tally);
        cmd.args(["run", "--config", &cfg_envs_text])
            .current_dir(dir.path())
            .env("TALLY_BROKERS", &broker)
            .env("TALLY_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("tally.log"))?);
        for (k, v) in &envs {
            cmd.env(k, v);
        }
        let t0 = Instant::now();
        let mut child = cmd.spawn()?;
        let mut first: Option<Instant> = None;
        let deadline = t0 + Duration::from_secs(600);
        while double.accepted() < events {
            if first.is_none() && double.accepted() > 0 {
                first = Some(Instant::now());
            }
            if Instant::now() > deadline || child.try_wait()?.is_some() {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "tally did not deliver everything: {} of {events}; log in {}",
                    double.accepted(),
                    dir.path().join("tally.log").display()
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let total = t0.elapsed().as_secs_f64();
        let steady = first.map_or(total, |f| f.elapsed().as_secs_f64());
        // SIGTERM: clean drain.
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let _ = child.wait();
        println!(
            "tally max_in_flight={n}: {:.0} records/s from start ({total:.2} s incl. startup), \
             {:.0} records/s from first ack; lookups+posts={} (produce took {produce_s:.1} s)",
            events as f64 / total,
            events as f64 / steady,
            double.requests(),
        );
    }
    Ok(())
}

/// (tenantId, subscriptionExternalKey) of every event: the double must know them.
fn subscriptions(lines: &str) -> BTreeSet<(String, String)> {
    lines
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            Some((
                v["tenantId"].as_str()?.to_string(),
                v["subscriptionExternalKey"].as_str()?.to_string(),
            ))
        })
        .collect()
}

/// user+sys seconds and peak RSS (kB) of a running process, from /proc.
fn proc_usage(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(") ")?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let hz: f64 = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((ticks / hz, hwm))
}

/// The Kill Bill row of scripts/bench.sh (see the module docs).
fn bench_row(args: &[String]) -> Result<()> {
    let [topic, events_file, latency_ms, limit] = args else {
        return Err("usage: bench_killbill row TOPIC EVENTS_FILE LATENCY_MS LIMIT".into());
    };
    let latency = Duration::from_millis(latency_ms.parse()?);
    let limit: usize = limit.parse()?;
    let broker = env("TALLY_TEST_BROKER")?;
    let tally = env("TALLY_BIN")?;
    let lines = std::fs::read_to_string(events_file)?;
    let double = KillbillDouble::with_tenants(&TENANTS);
    for (t, s) in subscriptions(&lines) {
        double.add_subscription(&t, &s);
    }
    double.set_latency(latency);
    let dir = tempfile::tempdir()?;
    // The pipeline's default window, as a user runs it.
    let (config, envs) = write_config(dir.path(), &double, &broker, topic, 64)?;
    let mut cmd = Command::new(&tally);
    cmd.args(["run", "--config", &config])
        .current_dir(dir.path())
        .env("TALLY_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("tally.log"))?);
    for (k, v) in &envs {
        cmd.env(k, v);
    }
    let t0 = Instant::now();
    let mut child = cmd.spawn()?;
    let mut first: Option<f64> = None;
    let deadline = t0 + Duration::from_secs(900);
    while double.accepted() < limit {
        if first.is_none() && double.accepted() > 0 {
            first = Some(t0.elapsed().as_secs_f64());
        }
        if Instant::now() > deadline || child.try_wait()?.is_some() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "tally did not deliver {limit} records: {}; log in {}",
                double.accepted(),
                dir.path().join("tally.log").display()
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let wall = t0.elapsed().as_secs_f64();
    let (cpu, rss_kb) = proc_usage(child.id()).unwrap_or((f64::NAN, 0));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let duplicates = double.duplicate_posts();
    println!(
        "{}",
        serde_json::json!({
            "records": double.accepted(),
            "wall_s": wall,
            "first_ack_s": first.unwrap_or(wall),
            "tally_cpu_s": cpu,
            "tally_rss_kb": rss_kb,
            "requests": double.requests(),
            "duplicate_posts": duplicates,
        })
    );
    if duplicates > 0 {
        return Err(format!("{duplicates} duplicate POSTs reached the double").into());
    }
    Ok(())
}

fn write_config(
    dir: &Path,
    double: &KillbillDouble,
    broker: &str,
    topic: &str,
    in_flight: usize,
) -> Result<(String, Vec<(String, String)>)> {
    let (kb, envs) = sink_toml(
        double,
        dir,
        &TENANTS,
        &format!("max_in_flight = {in_flight}\n"),
    );
    let text = format!(
        "[kafka]\nbrokers = [{broker:?}]\n[store]\npath = {:?}\n\n[[routes]]\nname = \"usage\"\ntopics = [{topic:?}]\nformat = \"killbill-usage\"\nsink = \"killbill\"\nstart = \"earliest\"\n\n{kb}",
        dir.join("state").display().to_string()
    );
    let path = dir.join("tally.toml");
    std::fs::write(&path, text)?;
    Ok((path.display().to_string(), envs))
}

/// The original plugin's shape: one POST, wait for the answer, next.
fn sequential_baseline(latency: Duration) -> Result<f64> {
    let double = KillbillDouble::with_tenants(&TENANTS[..1]);
    let sub = double.add_subscription(TENANTS[0], "sub-00-0000");
    double.set_latency(latency);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let url = format!("{}/1.0/kb/usages", double.url());
    rt.block_on(async {
        let client = reqwest::Client::builder().build()?;
        let n = (2.0 / latency.as_secs_f64().max(0.000_1)).clamp(100.0, 5000.0) as usize;
        let t0 = Instant::now();
        for i in 0..n {
            let body = format!(
                r#"{{"subscriptionId":"{sub}","trackingId":"seq-{i}","unitUsageRecords":[{{"unitType":"api-calls","usageRecords":[{{"recordDate":"2026-11-01T10:00:00.000Z","amount":1.5}}]}}]}}"#
            );
            let resp = client
                .post(&url)
                .basic_auth("admin", Some("password"))
                .header("X-Killbill-ApiKey", "key-0")
                .header("X-Killbill-ApiSecret", "secret-0")
                .header("X-Killbill-CreatedBy", "bench")
                .header("Content-Type", "application/json")
                .body(body)
                .send()
                .await?;
            if resp.status().as_u16() != 201 {
                return Err(format!("baseline POST: {}", resp.status()).into());
            }
        }
        Ok(n as f64 / t0.elapsed().as_secs_f64())
    })
}
