//! `tally health`: exit 0 while a tally daemon holds this config's store.
//!
//! Meant for container HEALTHCHECKs and supervisors: it touches neither the
//! broker nor sled, only the store's lock file.

use std::process::ExitCode;

use super::load;
use crate::store::lock_holder;

#[derive(Debug, clap::Args)]
pub struct HealthArgs {
    #[arg(long, short = 'c', env = "TALLY_CONFIG")]
    config: std::path::PathBuf,
}

pub fn health(args: &HealthArgs) -> anyhow::Result<ExitCode> {
    let settings = load(&args.config)?;
    let dir = &settings.store.path;
    match lock_holder(dir)? {
        Some(pid) => {
            let pid = pid.map_or_else(|| "unknown pid".to_string(), |p| format!("pid {p}"));
            println!("healthy: tally ({pid}) holds {}", dir.display());
            Ok(ExitCode::SUCCESS)
        }
        None => {
            println!("unhealthy: no tally process holds {}", dir.display());
            Ok(ExitCode::from(1))
        }
    }
}
