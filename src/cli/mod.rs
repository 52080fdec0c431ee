//! Command line interface: one file per subcommand; `anyhow` lives here only.

mod access;
mod check;
mod dlq;
mod health;
mod ids;
mod offsets;
mod produce;
mod progress;
mod reset_offsets;
mod run;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{ConfigError, Settings};
use crate::pipeline::PipelineError;
use crate::store::StoreError;

/// `tally --version`: version, the git commit built from, and the target.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("TALLY_GIT_COMMIT"),
    ", ",
    env!("TALLY_TARGET"),
    ")"
);

#[derive(Debug, Parser)]
#[command(
    name = "tally",
    version = VERSION,
    about = "Consume events from Kafka and deliver each exactly once"
)]
struct Cli {
    /// Log format on stderr: `text` for people, `json` (one object per line) for log shippers.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "TALLY_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon: consume owned partitions, deliver, commit. SIGINT/SIGTERM drain and exit 0.
    Run(ConfigArg),
    /// Validate the config and print it resolved (secrets redacted); --connect probes broker and sinks.
    Check(check::CheckArgs),
    /// Publish JSON lines from stdin to a topic.
    Produce(produce::ProduceArgs),
    /// Show committed offsets per partition, with the broker's log end and lag when reachable.
    Offsets(offsets::OffsetsArgs),
    /// Move committed offsets (dry run unless --execute); the daemon must be stopped.
    ResetOffsets(reset_offsets::ResetOffsetsArgs),
    /// Tracking IDs (dedupe keys): lookup, count, export, prune.
    Ids(ids::IdsArgs),
    /// Store statistics: size, IDs, partitions, dead letters, schema version.
    Stats(stats::StatsArgs),
    /// Dead letters: records that were not delivered, with the reason; list, show, replay, purge.
    Dlq(dlq::DlqArgs),
    /// Exit 0 while a tally daemon holds this config's store (for health checks).
    Health(health::HealthArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct ConfigArg {
    /// Path to the TOML config file.
    #[arg(long, short = 'c', env = "TALLY_CONFIG")]
    pub config: PathBuf,
}

/// Exit codes, so scripts and supervisors can tell failures apart.
pub mod exit {
    /// Bad command line or config.
    pub const CONFIG: u8 = 2;
    /// The store is locked by another process.
    pub const STORE_LOCKED: u8 = 3;
    /// Any other failure.
    pub const FAILURE: u8 = 1;
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The daemon logs its progress; one-shot commands only warnings.
    init_tracing(
        if matches!(cli.command, Command::Run(_)) {
            "info"
        } else {
            "warn"
        },
        cli.log_format,
    );
    let result = match cli.command {
        Command::Run(a) => run::run(&a),
        Command::Check(a) => check::check(&a),
        Command::Produce(a) => produce::produce(&a),
        Command::Offsets(a) => offsets::offsets(&a),
        Command::ResetOffsets(a) => reset_offsets::reset_offsets(&a),
        Command::Ids(a) => ids::ids(&a),
        Command::Stats(a) => stats::stats(&a),
        Command::Dlq(a) => dlq::dlq(&a),
        Command::Health(a) => health::health(&a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::from(exit_code_for(&e))
        }
    }
}

/// The error and its causes, joined by ": ", skipping a cause whose text the
/// message before it already ends with: many of our typed errors print their
/// source inline (`"http sink: {0}"`), and anyhow's `{:#}` would repeat it.
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn exit_code_for(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if cause.downcast_ref::<ConfigError>().is_some() {
            return exit::CONFIG;
        }
        if let Some(StoreError::Locked { .. }) = cause.downcast_ref::<StoreError>() {
            return exit::STORE_LOCKED;
        }
        if let Some(PipelineError::Store(StoreError::Locked { .. })) =
            cause.downcast_ref::<PipelineError>()
        {
            return exit::STORE_LOCKED;
        }
    }
    exit::FAILURE
}

fn init_tracing(default_level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TALLY_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{default_level},rskafka=warn"))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        // Flattened fields: {"timestamp","level","message","route",...} per line.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}

pub(crate) fn load(config: &std::path::Path) -> anyhow::Result<Settings> {
    Ok(Settings::load(config)?)
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[derive(Debug, thiserror::Error)]
    #[error("key_file k.pem: cannot read")]
    struct Inner;

    #[derive(Debug, thiserror::Error)]
    #[error("http sink: {0}")]
    struct Wrapper(#[from] Inner);

    #[test]
    fn a_cause_printed_inline_is_not_repeated() {
        let e = anyhow::Error::new(Wrapper(Inner)).context("tally run");
        assert_eq!(
            error_chain(&e),
            "tally run: http sink: key_file k.pem: cannot read"
        );
    }

    #[test]
    fn a_cause_not_printed_inline_is_kept() {
        let e = anyhow::Error::new(Inner).context("tally run");
        assert_eq!(error_chain(&e), "tally run: key_file k.pem: cannot read");
    }
}
