//! A one-line progress indicator for long commands: on a terminal only
//! (std::io::IsTerminal), silent when stderr is piped or redirected.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

pub(crate) struct Progress {
    label: &'static str,
    enabled: bool,
    last: Option<Instant>,
}

impl Progress {
    /// `quiet_if_stdout_tty`: commands whose stdout is the output (export)
    /// would interleave with the progress line on the same terminal.
    pub fn new(label: &'static str, quiet_if_stdout_tty: bool) -> Progress {
        let enabled = std::io::stderr().is_terminal()
            && !(quiet_if_stdout_tty && std::io::stdout().is_terminal());
        Progress {
            label,
            enabled,
            last: None,
        }
    }

    /// At most ten redraws a second.
    pub fn update(&mut self, done: u64, total: u64) {
        if !self.enabled
            || self
                .last
                .is_some_and(|t| t.elapsed() < Duration::from_millis(100))
        {
            return;
        }
        self.last = Some(Instant::now());
        let pct = (done * 100).checked_div(total).unwrap_or(100);
        let mut e = std::io::stderr().lock();
        let _ = write!(e, "\r{}: {done}/{total} ({pct}%)\x1b[K", self.label);
        let _ = e.flush();
    }

    pub fn finish(&mut self) {
        if self.enabled && self.last.is_some() {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
        }
    }
}
