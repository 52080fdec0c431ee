//! Sink `http`: each record is one `POST` of its JSON (or of the envelope
//! `{topic, notifiedAt, event}`) to the configured URL.
//!
//! Every record of a `deliver` call has a distinct dedupe key (the worker
//! guarantees it), so they are sent concurrently; one semaphore bounds
//! requests across all partitions and routes. `Idempotency-Key` carries the
//! dedupe key (or `topic/partition/offset`): a re-send after a crash between
//! ack and commit carries the same key, for the receiver to absorb.

mod error;
mod probe;

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use tokio::sync::Semaphore;

pub use error::HttpError;

use super::envelope::{envelope, idempotency_key};
use super::http_client::{self, ClientOptions, HttpClientError};
use super::secrets::{self, SecretError};
use super::{Outgoing, SinkError, fan_out};
use crate::config::HttpSinkSettings;

#[derive(Debug, thiserror::Error)]
pub enum HttpSetupError {
    #[error("http sink: {0}")]
    Secret(#[from] SecretError),
    #[error("http sink: {0}")]
    Client(#[from] HttpClientError),
    #[error("http sink: header {name} cannot be sent (invalid name or value)")]
    Header { name: String },
}

#[derive(Debug)]
pub struct HttpSink {
    http: reqwest::Client,
    url: reqwest::Url,
    envelope: bool,
    headers: HeaderMap,
    permits: Semaphore,
    /// Requests of one chunk alive at once (see `deliver`).
    max_in_flight: usize,
}

/// Most of an error body kept for the dead letter's reason.
const BODY_EXCERPT: usize = 512;

impl HttpSink {
    /// Reads the secret headers and prepares the client; no request is made yet.
    pub fn new(cfg: &HttpSinkSettings) -> Result<HttpSink, HttpSetupError> {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in &cfg.headers {
            headers.insert(header_name(name)?, header_value(name, value, false)?);
        }
        for (name, r) in &cfg.secret_headers {
            let value = secrets::resolve(&format!("sinks.http header {name}"), r)?;
            headers.insert(header_name(name)?, header_value(name, &value, true)?);
        }
        let identity = cfg.cert_file.as_deref().zip(cfg.key_file.as_deref());
        let http = http_client::build(ClientOptions {
            ca_file: cfg.ca_file.as_deref(),
            identity,
            connect_timeout: cfg.connect_timeout,
            request_timeout: cfg.request_timeout,
            max_idle: cfg.max_in_flight,
        })?;
        Ok(HttpSink {
            http,
            url: cfg.url.clone(),
            envelope: cfg.envelope,
            headers,
            permits: Semaphore::new(cfg.max_in_flight),
            max_in_flight: cfg.max_in_flight,
        })
    }

    /// Results in order; see `fan_out` for the window and for what a
    /// down endpoint costs.
    pub async fn deliver(&self, batch: &[&Outgoing]) -> Vec<Result<(), SinkError>> {
        fan_out::each(batch, self.max_in_flight, |o| {
            Box::pin(async move { self.deliver_one(o).await.map_err(SinkError::Http) })
        })
        .await
    }

    async fn deliver_one(&self, o: &Outgoing) -> Result<(), HttpError> {
        let body = if self.envelope {
            envelope(o).into()
        } else {
            o.event.clone()
        };
        let key = idempotency_key(o);
        let key = HeaderValue::from_str(&key).map_err(|e| HttpError::Request {
            message: format!("Idempotency-Key {key:?}: {e}"),
        })?;
        let mut headers = self.headers.clone();
        headers.insert(HeaderName::from_static("idempotency-key"), key);
        headers.insert(
            HeaderName::from_static("x-tally-topic"),
            HeaderValue::from_str(&o.topic).map_err(|e| HttpError::Request {
                message: format!("topic as header: {e}"),
            })?,
        );
        headers.insert(
            HeaderName::from_static("x-tally-partition"),
            HeaderValue::from(o.partition),
        );
        headers.insert(
            HeaderName::from_static("x-tally-offset"),
            HeaderValue::from(o.offset),
        );
        // The semaphore is never closed; a closed one would mean shutdown.
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| HttpError::Transport {
                message: "sink is shutting down".to_string(),
            })?;
        let resp = self
            .http
            .post(self.url.clone())
            .headers(headers)
            .body(body)
            .send()
            .await
            .map_err(|e| HttpError::from_reqwest(&e))?;
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            // Drain the body so that the connection can be reused; its content does not matter.
            let _ = resp.bytes().await;
            return Ok(());
        }
        let body = resp.bytes().await.unwrap_or_default();
        let mut text = String::from_utf8_lossy(&body[..body.len().min(BODY_EXCERPT)]).into_owned();
        if body.len() > BODY_EXCERPT {
            text.push('…');
        }
        Err(HttpError::Status { status, body: text })
    }
}

fn header_name(name: &str) -> Result<HeaderName, HttpSetupError> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| HttpSetupError::Header {
        name: name.to_string(),
    })
}

/// Secret values are marked sensitive so that they never show in debug output.
fn header_value(name: &str, value: &str, sensitive: bool) -> Result<HeaderValue, HttpSetupError> {
    let mut v = HeaderValue::from_str(value).map_err(|_| HttpSetupError::Header {
        name: name.to_string(),
    })?;
    v.set_sensitive(sensitive);
    Ok(v)
}
