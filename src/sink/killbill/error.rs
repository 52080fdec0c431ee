//! Why one Kill Bill delivery failed. What each case *means* (retry, halt,
//! dead-letter) is decided in `pipeline::classify`, nowhere else.

use std::fmt;

/// Which request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `GET /1.0/kb/subscriptions?externalKey=`
    Lookup,
    /// `POST /1.0/kb/usages`
    Post,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Lookup => "subscription lookup",
            Op::Post => "POST usages",
        })
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum KillbillError {
    #[error("record has no Kill Bill usage event (the route's format must be killbill-usage)")]
    NotUsage,
    #[error("tenant {tenant_id} has no credentials in [sinks.killbill.tenants]")]
    UnmappedTenant { tenant_id: String },
    #[error("kill bill {op}: cannot connect: {message}")]
    Connect { op: Op, message: String },
    #[error("kill bill {op}: no answer within the request timeout: {message}")]
    Timeout { op: Op, message: String },
    #[error("kill bill {op}: {message}")]
    Transport { op: Op, message: String },
    #[error("kill bill {op}: cannot build the request: {message}")]
    Request { op: Op, message: String },
    /// An HTTP answer that is not a success. `code` is Kill Bill's own error
    /// code from a JSON error body; `None` when the body was not Kill Bill's
    /// (e.g. a proxy's page), which matters for 404s.
    #[error("kill bill {op}: HTTP {status}{}: {message}", code.map(|c| format!(" (code {c})")).unwrap_or_default())]
    Status {
        op: Op,
        status: u16,
        code: Option<i64>,
        message: String,
    },
    #[error("kill bill {op}: unexpected answer: {message}")]
    BadAnswer { op: Op, message: String },
}

impl KillbillError {
    pub(super) fn from_reqwest(op: Op, e: &reqwest::Error) -> KillbillError {
        let message = crate::sink::http_client::error_chain(e);
        if e.is_timeout() {
            KillbillError::Timeout { op, message }
        } else if e.is_connect() {
            KillbillError::Connect { op, message }
        } else if e.is_builder() {
            KillbillError::Request { op, message }
        } else {
            KillbillError::Transport { op, message }
        }
    }
}
