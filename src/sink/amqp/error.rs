//! Why one AMQP publish failed. What each case *means* (retry, halt,
//! dead-letter) is decided in `pipeline::classify`, nowhere else.

use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};

use crate::config::RejectPolicy;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// basic.nack: the broker could not take the message.
    Nack,
    /// basic.return on a mandatory publish: no queue is bound to receive it.
    Unroutable,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum AmqpError {
    /// Connection or channel lost, broker unreachable, connect timed out.
    #[error("amqp sink: {context}: {message}")]
    Unavailable {
        context: &'static str,
        message: String,
    },
    #[error("amqp sink: no publisher confirm within {secs} s; reconnecting")]
    ConfirmTimeout { secs: u64 },
    /// Credentials, vhost, permissions, TLS, or an exchange declared with
    /// other arguments: the operator must act.
    #[error("amqp sink: {context}: {message}")]
    Refused {
        context: &'static str,
        message: String,
    },
    /// Carries the configured policy; `classify` maps it.
    #[error("amqp sink: {what:?} by the broker ({detail}); policy {policy:?}")]
    Rejected {
        what: Rejection,
        detail: String,
        policy: RejectPolicy,
    },
    /// Not published: an earlier record of the same call failed (order).
    #[error("amqp sink: held back behind an earlier record that was not confirmed")]
    HeldBack,
    #[error("amqp sink: topic {topic} has no exchange in [sinks.amqp.exchanges]")]
    Unmapped { topic: String },
}

impl AmqpError {
    pub(super) fn from_lapin(context: &'static str, e: &lapin::Error) -> AmqpError {
        let message = crate::sink::http_client::error_chain(e);
        if refused(e) {
            AmqpError::Refused { context, message }
        } else {
            AmqpError::Unavailable { context, message }
        }
    }
}

/// Errors no reconnect will cure.
fn refused(e: &lapin::Error) -> bool {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(p) => matches!(
            p.kind(),
            AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED)
                | AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED)
                | AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED)
        ),
        lapin::ErrorKind::AuthProviderError(_) | lapin::ErrorKind::InvalidProtocolVersion(_) => {
            true
        }
        lapin::ErrorKind::IOError(io) => io
            .get_ref()
            .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some()),
        _ => false,
    }
}
