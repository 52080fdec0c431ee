//! The reqwest client every HTTP-speaking sink uses: rustls with the ring
//! provider only (pure Rust + ring: no OpenSSL, no aws-lc, so the static musl
//! build works), a custom CA bundle or the built-in Mozilla roots, an optional
//! client certificate, timeouts, and no redirects.

use std::path::Path;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum HttpClientError {
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("cannot build the HTTP client: {0}")]
    Build(String),
}

/// What a sink asks of its client.
#[derive(Debug, Clone, Copy)]
pub struct ClientOptions<'a> {
    /// PEM bundle of the CAs to trust (replaces the built-in roots).
    pub ca_file: Option<&'a Path>,
    /// PEM client certificate chain and private key, for mutual TLS.
    pub identity: Option<(&'a Path, &'a Path)>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// Idle connections kept per host (the sink's concurrency bound).
    pub max_idle: usize,
}

pub fn build(opts: ClientOptions<'_>) -> Result<reqwest::Client, HttpClientError> {
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls_config(opts.ca_file, opts.identity)?)
        .connect_timeout(opts.connect_timeout)
        .timeout(opts.request_timeout)
        // A redirect means the URL points at the wrong place; never follow it with credentials.
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(opts.max_idle)
        .tcp_nodelay(true)
        .user_agent(concat!("tally/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| HttpClientError::Build(e.to_string()))
}

/// See [`crate::tls::client_config`]: the same loading (and errors) as the Kafka transport.
pub fn tls_config(
    ca_file: Option<&Path>,
    identity: Option<(&Path, &Path)>,
) -> Result<rustls::ClientConfig, HttpClientError> {
    Ok(crate::tls::client_config(ca_file, identity)?)
}

/// Whether a reqwest failure came from TLS itself (bad certificate, unknown
/// CA, handshake refused): configuration to fix, not an outage to wait out.
pub fn is_tls_error(e: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        // io::Error hides a custom inner error from `source()`.
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
        {
            return true;
        }
        source = s.source();
    }
    false
}

/// reqwest's own message is terse ("error sending request"); the causes say why.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_with_ring_and_builtin_roots() {
        assert!(tls_config(None, None).is_ok());
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("ca.pem");
        std::fs::write(&empty, "not a cert\n").unwrap();
        assert!(matches!(
            tls_config(Some(&empty), None),
            Err(HttpClientError::Tls(crate::tls::TlsError::PemEmpty { .. }))
        ));
        assert!(tls_config(Some(&dir.path().join("missing.pem")), None).is_err());
        let missing = dir.path().join("missing.key");
        assert!(tls_config(None, Some((&empty, &missing))).is_err());
    }
}
