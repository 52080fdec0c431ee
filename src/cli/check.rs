//! `tally check`: validate the config and print it resolved.

use std::process::ExitCode;

use super::{ConfigArg, load};

pub fn check(args: &ConfigArg) -> anyhow::Result<ExitCode> {
    let settings = load(&args.config)?;
    // Secrets are only ever references (`*_env`, `*_file`) in Settings, so
    // printing the resolved settings cannot leak one.
    let text = toml::to_string_pretty(&settings)?;
    println!(
        "# {} is valid; resolved settings:\n{text}",
        args.config.display()
    );
    Ok(ExitCode::SUCCESS)
}
