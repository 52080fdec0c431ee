//! Sinks: where a decoded record is delivered. A sink acknowledges a record
//! only once the destination has it durably; the pipeline commits after that.
//!
//! One folder per sink (config lives in `config`, tests beside the code).

pub mod amqp;
mod envelope;
mod fan_out;
pub mod file;
pub mod http;
pub mod http_client;
mod json_text;
pub mod killbill;
mod outgoing;
pub mod probe;
pub mod secrets;

use std::sync::Arc;

pub use outgoing::Outgoing;

use crate::config::{Settings, SinkKind};

/// Why a sink did not acknowledge a record. Classified into transient /
/// halt / permanent in exactly one place: `pipeline::classify`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SinkError {
    #[error("{op} {path}: {message}")]
    Io {
        op: &'static str,
        path: String,
        kind: std::io::ErrorKind,
        raw_os_error: Option<i32>,
        message: String,
    },
    #[error("sink writer stopped")]
    Stopped,
    /// Not attempted: an earlier request of the same call found the
    /// endpoint unreachable (see `fan_out`).
    #[error("not sent: the endpoint was unreachable for an earlier request of this call")]
    NotSent,
    #[error(transparent)]
    Killbill(#[from] killbill::KillbillError),
    #[error(transparent)]
    Http(#[from] http::HttpError),
    #[error(transparent)]
    Amqp(#[from] amqp::AmqpError),
}

impl SinkError {
    pub(crate) fn io(op: &'static str, path: &std::path::Path, e: &std::io::Error) -> SinkError {
        SinkError::Io {
            op,
            path: path.display().to_string(),
            kind: e.kind(),
            raw_os_error: e.raw_os_error(),
            message: e.to_string(),
        }
    }
}

/// Every configured sink, by kind. An enum rather than a trait object: the
/// set is closed and the hot path stays free of boxing.
#[derive(Debug)]
pub enum Sink {
    File(file::FileSink),
    /// Boxed: the client and caches are large next to the file sink's handle.
    Killbill(Box<killbill::KillbillSink>),
    Http(Box<http::HttpSink>),
    Amqp(Box<amqp::AmqpSink>),
}

impl Sink {
    /// Deliver these records; one result per record, same order.
    pub async fn deliver(&self, batch: &[&Outgoing]) -> Vec<Result<(), SinkError>> {
        match self {
            Sink::File(s) => s.deliver(batch).await,
            Sink::Killbill(s) => s.deliver(batch).await,
            Sink::Http(s) => s.deliver(batch).await,
            Sink::Amqp(s) => s.deliver(batch).await,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Sink::File(_) => "file",
            Sink::Killbill(_) => "killbill",
            Sink::Http(_) => "http",
            Sink::Amqp(_) => "amqp",
        }
    }
}

/// The sinks the routes use, built once.
#[derive(Debug, Default)]
pub struct Sinks {
    file: Option<Arc<Sink>>,
    killbill: Option<Arc<Sink>>,
    http: Option<Arc<Sink>>,
    amqp: Option<Arc<Sink>>,
}

#[derive(Debug, thiserror::Error)]
pub enum SinkSetupError {
    #[error("sink \"{0}\" is used by a route but not configured")]
    NotConfigured(&'static str),
    #[error(transparent)]
    File(#[from] file::FileSinkError),
    #[error(transparent)]
    Killbill(#[from] killbill::ClientSetupError),
    #[error(transparent)]
    Http(#[from] http::HttpSetupError),
    #[error(transparent)]
    Amqp(#[from] amqp::AmqpSetupError),
}

impl Sinks {
    pub fn build(settings: &Settings) -> Result<Sinks, SinkSetupError> {
        let mut sinks = Sinks::default();
        for route in &settings.routes {
            match route.sink {
                SinkKind::File if sinks.file.is_none() => {
                    let cfg = settings
                        .sinks
                        .file
                        .as_ref()
                        .ok_or(SinkSetupError::NotConfigured("file"))?;
                    sinks.file = Some(Arc::new(Sink::File(file::FileSink::open(
                        &cfg.path,
                        cfg.page_cache,
                    )?)));
                }
                SinkKind::File => {}
                // One Kill Bill sink (one client, one semaphore) for every route that uses it.
                SinkKind::Killbill if sinks.killbill.is_none() => {
                    let cfg = settings
                        .sinks
                        .killbill
                        .as_ref()
                        .ok_or(SinkSetupError::NotConfigured("killbill"))?;
                    sinks.killbill = Some(Arc::new(Sink::Killbill(Box::new(
                        killbill::KillbillSink::new(cfg)?,
                    ))));
                }
                SinkKind::Killbill => {}
                SinkKind::Http if sinks.http.is_none() => {
                    let cfg = settings
                        .sinks
                        .http
                        .as_ref()
                        .ok_or(SinkSetupError::NotConfigured("http"))?;
                    sinks.http = Some(Arc::new(Sink::Http(Box::new(http::HttpSink::new(cfg)?))));
                }
                SinkKind::Http => {}
                SinkKind::Amqp if sinks.amqp.is_none() => {
                    let cfg = settings
                        .sinks
                        .amqp
                        .as_ref()
                        .ok_or(SinkSetupError::NotConfigured("amqp"))?;
                    sinks.amqp = Some(Arc::new(Sink::Amqp(Box::new(amqp::AmqpSink::new(cfg)?))));
                }
                SinkKind::Amqp => {}
            }
        }
        Ok(sinks)
    }

    pub fn get(&self, kind: SinkKind) -> Option<Arc<Sink>> {
        match kind {
            SinkKind::File => self.file.clone(),
            SinkKind::Killbill => self.killbill.clone(),
            SinkKind::Http => self.http.clone(),
            SinkKind::Amqp => self.amqp.clone(),
        }
    }
}
