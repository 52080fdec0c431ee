//! Why one HTTP delivery failed. What each case *means* (retry, halt,
//! dead-letter) is decided in `pipeline::classify`, nowhere else.

use crate::sink::http_client::{error_chain, is_tls_error};

#[derive(Debug, Clone, thiserror::Error)]
pub enum HttpError {
    #[error("http sink: cannot connect: {message}")]
    Connect { message: String },
    #[error("http sink: no answer within the request timeout: {message}")]
    Timeout { message: String },
    /// Certificate or handshake failure: configuration, not an outage.
    #[error("http sink: TLS: {message}")]
    Tls { message: String },
    #[error("http sink: {message}")]
    Transport { message: String },
    #[error("http sink: cannot build the request: {message}")]
    Request { message: String },
    /// A non-2xx answer; `body` is the start of the response body, for the dead letter.
    #[error("http sink: HTTP {status}: {body}")]
    Status { status: u16, body: String },
}

impl HttpError {
    pub(super) fn from_reqwest(e: &reqwest::Error) -> HttpError {
        let message = error_chain(e);
        if is_tls_error(e) {
            HttpError::Tls { message }
        } else if e.is_timeout() {
            HttpError::Timeout { message }
        } else if e.is_connect() {
            HttpError::Connect { message }
        } else if e.is_builder() {
            HttpError::Request { message }
        } else {
            HttpError::Transport { message }
        }
    }
}
