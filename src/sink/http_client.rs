//! The reqwest client every HTTP-speaking sink uses: rustls with the ring
//! provider only (pure Rust + ring: no OpenSSL, no aws-lc, so the static musl
//! build works), a custom CA bundle or the built-in Mozilla roots, an optional
//! client certificate, timeouts, and no redirects.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum HttpClientError {
    #[error("cannot read {what} {path}: {message}")]
    Pem {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("{what} {path} holds no {expected}")]
    PemEmpty {
        what: &'static str,
        path: PathBuf,
        expected: &'static str,
    },
    #[error("TLS setup: {0}")]
    Tls(String),
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

/// rustls with the ring provider, trusting `ca_file` if given, else the
/// built-in Mozilla roots (a `FROM scratch` image has no system store).
pub fn tls_config(
    ca_file: Option<&Path>,
    identity: Option<(&Path, &Path)>,
) -> Result<rustls::ClientConfig, HttpClientError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in certs("ca_file", path)? {
                roots.add(cert).map_err(|e| HttpClientError::Pem {
                    what: "ca_file",
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    // Also the process default: reqwest panics when it needs a provider and
    // none is installed (the `*-no-provider` features); ring is the only one built.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| HttpClientError::Tls(e.to_string()))?
        .with_root_certificates(roots);
    match identity {
        None => Ok(builder.with_no_client_auth()),
        Some((cert_file, key_file)) => {
            let chain = certs("cert_file", cert_file)?;
            let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| HttpClientError::Pem {
                what: "key_file",
                path: key_file.to_path_buf(),
                message: e.to_string(),
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| HttpClientError::Tls(format!("client certificate: {e}")))
        }
    }
}

fn certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, HttpClientError> {
    let err = |message: String| HttpClientError::Pem {
        what,
        path: path.to_path_buf(),
        message,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(HttpClientError::PemEmpty {
            what,
            path: path.to_path_buf(),
            expected: "certificate",
        });
    }
    Ok(certs)
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
            Err(HttpClientError::PemEmpty { .. })
        ));
        assert!(tls_config(Some(&dir.path().join("missing.pem")), None).is_err());
        let missing = dir.path().join("missing.key");
        assert!(tls_config(None, Some((&empty, &missing))).is_err());
    }
}
