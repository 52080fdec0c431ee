//! `tally stats`: what the store holds — size, IDs, partitions, dead letters, schema.

use std::process::ExitCode;

use super::access::{self, Access};
use super::load;
use crate::admin::views::{self, StatsView};

#[derive(Debug, clap::Args)]
pub struct StatsArgs {
    #[arg(long, short = 'c', env = "TALLY_CONFIG")]
    config: std::path::PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn stats(args: &StatsArgs) -> anyhow::Result<ExitCode> {
    let settings = load(&args.config)?;
    let (s, via): (StatsView, String) = match access::open(&settings)? {
        Access::Store(store) => (views::stats(&store)?, "store opened directly".into()),
        Access::Daemon(client) => (
            access::daemon_get(&client, "/v1/stats")?,
            format!("from the running daemon at {}", client.addr()),
        ),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(ExitCode::SUCCESS);
    }
    let dash = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
    println!("store           {}  ({via})", s.path);
    println!(
        "schema          v{} (this tally supports up to v{})",
        s.schema_version, s.supported_schema_version
    );
    println!("created         {}", s.created);
    println!("size on disk    {}", human_bytes(s.size_on_disk_bytes));
    println!("tracking IDs    {} in {} batches", s.ids, s.batches);
    println!("oldest batch    {}", dash(&s.oldest_batch));
    println!("newest batch    {}", dash(&s.newest_batch));
    println!("partitions      {}", s.partitions);
    println!("dead letters    {}", s.dead_letters);
    println!("index memory    {}", human_bytes(s.index_bytes));
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {} ({b} bytes)", UNITS[u])
    }
}
