//! The one place that decides what a failure means for a record.
//!
//! * **Transient** — the destination is briefly unavailable: pause, retry with
//!   capped exponential backoff and jitter, forever. Billing data is never
//!   dropped for being late.
//! * **Halt** — misconfiguration the operator must fix (credentials, TLS, a
//!   full disk): stop progress, retry slowly, never skip.
//! * **Permanent** — the record itself is wrong: dead-letter it with the
//!   reason and move on.

use crate::format::DecodeError;
use crate::sink::SinkError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    Transient,
    Halt,
    Permanent,
}

impl FailureClass {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Transient => "transient",
            FailureClass::Halt => "halt",
            FailureClass::Permanent => "permanent",
        }
    }
}

pub fn classify_sink(e: &SinkError) -> FailureClass {
    match e {
        SinkError::Io {
            kind, raw_os_error, ..
        } => {
            // ENOSPC, EDQUOT, EROFS, EACCES, EPERM: nothing improves until someone acts.
            const HALT_ERRNOS: [i32; 5] = [28, 122, 30, 13, 1];
            if raw_os_error.is_some_and(|c| HALT_ERRNOS.contains(&c))
                || *kind == std::io::ErrorKind::PermissionDenied
            {
                FailureClass::Halt
            } else {
                FailureClass::Transient
            }
        }
        SinkError::Stopped => FailureClass::Transient,
    }
}

/// A record that cannot be decoded will never decode: permanent.
pub fn classify_decode(_: &DecodeError) -> FailureClass {
    FailureClass::Permanent
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(kind: std::io::ErrorKind, raw: Option<i32>) -> SinkError {
        SinkError::Io {
            op: "write",
            path: "x".into(),
            kind,
            raw_os_error: raw,
            message: String::new(),
        }
    }

    #[test]
    fn disk_full_halts_and_interruptions_retry() {
        assert_eq!(
            classify_sink(&io(std::io::ErrorKind::Other, Some(28))),
            FailureClass::Halt
        );
        assert_eq!(
            classify_sink(&io(std::io::ErrorKind::PermissionDenied, Some(13))),
            FailureClass::Halt
        );
        assert_eq!(
            classify_sink(&io(std::io::ErrorKind::Interrupted, Some(4))),
            FailureClass::Transient
        );
    }
}
