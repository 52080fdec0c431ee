//! `tally run`: the daemon.

use std::process::ExitCode;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::{ConfigArg, load, runtime};
use crate::pipeline;

pub fn run(args: &ConfigArg) -> anyhow::Result<ExitCode> {
    let settings = load(&args.config)?;
    let rt = runtime()?;
    rt.block_on(async move {
        let cancel = CancellationToken::new();
        tokio::spawn(wait_for_signal(cancel.clone()));
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            routes = settings.routes.len(),
            "tally starting"
        );
        let summary = pipeline::run(settings, cancel).await.context("tally run")?;
        tracing::info!(
            delivered = summary.delivered,
            duplicates = summary.duplicates,
            dead_lettered = summary.dead_lettered,
            "stopped cleanly"
        );
        if summary.failed_partitions > 0 {
            anyhow::bail!(
                "{} partition(s) stopped on errors; see the log above",
                summary.failed_partitions
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// SIGINT or SIGTERM starts a drain; a second signal is left to the default
/// handler only after the drain deadline, so one Ctrl-C is always clean.
async fn wait_for_signal(cancel: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        _ => {
            tracing::error!(
                "cannot install signal handlers; stop tally with SIGKILL only as a last resort"
            );
            return;
        }
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!("{name} received: stopping fetches, draining in-flight deliveries, committing");
    cancel.cancel();
}
