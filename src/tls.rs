//! rustls configuration from PEM files, shared by the Kafka transport, the
//! HTTP sinks and the admin API's server: the ring provider only (pure Rust + ring: no OpenSSL,
//! no aws-lc, so the static musl build works), a CA bundle or the built-in
//! Mozilla roots, an optional client certificate chain and key.
//!
//! Every error names the config key, the file and the problem.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what} {path}: cannot read: {message}")]
    Read {
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
    #[error("{what} {path}: certificate refused: {message}")]
    BadCertificate {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error(
        "key_file {key} does not match the certificate in cert_file {cert} (the key belongs to another certificate)"
    )]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("client certificate {cert} / key {key}: {message}")]
    Identity {
        cert: PathBuf,
        key: PathBuf,
        message: String,
    },
    #[error("TLS setup: {0}")]
    Setup(String),
}

/// The ring provider, also installed as the process default: reqwest panics
/// when it needs a provider and none is installed (its `*-no-provider`
/// features), and ring is the only one built.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client config trusting `ca_file` if given, else the built-in Mozilla
/// roots (webpki-roots: a `FROM scratch` image has no system store), and
/// presenting `identity` (certificate chain, private key) when the server asks.
pub fn client_config(
    ca_file: Option<&Path>,
    identity: Option<(&Path, &Path)>,
) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in certs("ca_file", path)? {
                roots.add(cert).map_err(|e| TlsError::BadCertificate {
                    what: "ca_file",
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .with_root_certificates(roots);
    match identity {
        None => Ok(builder.with_no_client_auth()),
        Some((cert_file, key_file)) => {
            let chain = certs("cert_file", cert_file)?;
            let key = private_key(key_file)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| identity_error(e, cert_file, key_file))
        }
    }
}

/// A server config presenting `cert_file` + `key_file`, and requiring a
/// client certificate issued by `client_ca_file` when one is given (mTLS).
pub fn server_config(
    cert_file: &Path,
    key_file: &Path,
    client_ca_file: Option<&Path>,
) -> Result<rustls::ServerConfig, TlsError> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    let builder = match client_ca_file {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certs("client_ca_file", path)? {
                roots.add(cert).map_err(|e| TlsError::BadCertificate {
                    what: "client_ca_file",
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .map_err(|e| TlsError::Setup(format!("client_ca_file {}: {e}", path.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let chain = certs("cert_file", cert_file)?;
    let key = private_key(key_file)?;
    builder
        .with_single_cert(chain, key)
        .map_err(|e| identity_error(e, cert_file, key_file))
}

fn identity_error(e: rustls::Error, cert: &Path, key: &Path) -> TlsError {
    match e {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
            TlsError::KeyMismatch {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
            }
        }
        other => TlsError::Identity {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            message: other.to_string(),
        },
    }
}

/// Every certificate in a PEM file (a CA bundle may hold several).
pub fn certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| read_error(what, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_error(what, path, e))?;
    if certs.is_empty() {
        return Err(TlsError::PemEmpty {
            what,
            path: path.to_path_buf(),
            expected: "certificate (-----BEGIN CERTIFICATE-----)",
        });
    }
    Ok(certs)
}

/// The first private key in a PEM file: PKCS#8 (`BEGIN PRIVATE KEY`),
/// PKCS#1 RSA (`BEGIN RSA PRIVATE KEY`) or SEC1 EC (`BEGIN EC PRIVATE KEY`).
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::PemEmpty {
            what: "key_file",
            path: path.to_path_buf(),
            expected: "private key (PKCS#8, PKCS#1 RSA or SEC1 EC PEM)",
        },
        other => read_error("key_file", path, other),
    })
}

fn read_error(what: &'static str, path: &Path, e: pem::Error) -> TlsError {
    let message = match e {
        pem::Error::Io(io) => io.to_string(),
        other => format!("not valid PEM ({other})"),
    };
    TlsError::Read {
        what,
        path: path.to_path_buf(),
        message,
    }
}

/// The rustls error inside an I/O error from a TLS stream, if that is what
/// it is: a handshake or certificate failure (configuration to fix), as
/// opposed to the network going away.
pub fn rustls_error(e: &std::io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}

/// A TLS failure in words an operator can act on.
pub fn explain(e: &rustls::Error) -> String {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    let hint = match e {
        E::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            "the server's certificate has expired"
        }
        E::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => {
            "the server's certificate is not valid yet (check the clocks)"
        }
        E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
            "the server's certificate is not issued for the name we connected to (set server_name if the broker is reached under another name)"
        }
        E::InvalidCertificate(C::UnknownIssuer) => {
            "the server's certificate is not signed by a CA in ca_file (or the built-in roots)"
        }
        E::AlertReceived(A::CertificateRequired | A::HandshakeFailure)
        | E::AlertReceived(A::BadCertificate | A::UnknownCA | A::CertificateUnknown) => {
            "the server refused the handshake: it requires a client certificate it trusts (cert_file/key_file)"
        }
        _ => "",
    };
    if hint.is_empty() {
        e.to_string()
    } else {
        format!("{e}: {hint}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_roots_and_file_errors_name_the_file() {
        assert!(client_config(None, None).is_ok());
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("ca.pem");
        std::fs::write(&empty, "not a cert\n").unwrap();
        let err = client_config(Some(&empty), None).unwrap_err();
        assert!(matches!(err, TlsError::PemEmpty { .. }), "{err}");
        assert!(err.to_string().contains("ca.pem"), "{err}");
        let missing = dir.path().join("missing.pem");
        let err = client_config(Some(&missing), None).unwrap_err().to_string();
        assert!(
            err.contains("missing.pem") && err.contains("ca_file"),
            "{err}"
        );
        let missing_key = dir.path().join("missing.key");
        let err = client_config(None, Some((&empty, &missing_key)))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ca.pem") || err.contains("missing.key"),
            "{err}"
        );
    }

    fn self_signed(
        alg: &'static rcgen::SignatureAlgorithm,
    ) -> (rcgen::Certificate, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let params = rcgen::CertificateParams::new(vec!["client".to_string()]).unwrap();
        (params.self_signed(&key).unwrap(), key)
    }

    #[test]
    fn client_keys_in_every_pem_flavour_and_mismatch_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256);
        let cert_path = dir.path().join("client.pem");
        std::fs::write(&cert_path, cert.pem()).unwrap();
        // PKCS#8
        let pkcs8 = dir.path().join("pkcs8.key");
        std::fs::write(&pkcs8, key.serialize_pem()).unwrap();
        client_config(None, Some((&cert_path, &pkcs8))).unwrap();
        // SEC1: the same key, re-wrapped.
        let sec1 = dir.path().join("sec1.key");
        let der = match PrivateKeyDer::from_pem_file(&pkcs8).unwrap() {
            PrivateKeyDer::Pkcs8(k) => k.secret_pkcs8_der().to_vec(),
            _ => unreachable!(),
        };
        std::fs::write(&sec1, pem_block("EC PRIVATE KEY", &sec1_from_pkcs8(&der))).unwrap();
        client_config(None, Some((&cert_path, &sec1))).unwrap();

        // Another key for the same certificate.
        let (_, other) = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256);
        let other_path = dir.path().join("other.key");
        std::fs::write(&other_path, other.serialize_pem()).unwrap();
        let err = client_config(None, Some((&cert_path, &other_path))).unwrap_err();
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("other.key") && msg.contains("client.pem"),
            "{msg}"
        );
    }

    /// PKCS#1 RSA keys come from the openssl CLI (ring cannot generate RSA
    /// keys); the test scripts install it alongside stunnel4.
    #[test]
    fn pkcs1_rsa_client_key() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, pkcs1) = (
            dir.path().join("rsa.pem"),
            dir.path().join("rsa8.key"),
            dir.path().join("rsa1.key"),
        );
        let run = |args: &[&str]| {
            let out = std::process::Command::new("openssl")
                .args(args)
                .output()
                .expect("openssl CLI (apt-get install openssl)");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let (c, k, k1) = (
            cert.to_str().unwrap(),
            key.to_str().unwrap(),
            pkcs1.to_str().unwrap(),
        );
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            k,
            "-out",
            c,
            "-subj",
            "/CN=client",
            "-days",
            "1",
        ]);
        run(&["rsa", "-in", k, "-traditional", "-out", k1]);
        assert!(
            std::fs::read_to_string(&pkcs1)
                .unwrap()
                .contains("BEGIN RSA PRIVATE KEY")
        );
        client_config(None, Some((&cert, &pkcs1))).unwrap();
    }

    /// PKCS#8 wraps the SEC1 ECPrivateKey in an OCTET STRING: for a P-256
    /// key from rcgen/ring it is the last element of the outer SEQUENCE.
    fn sec1_from_pkcs8(der: &[u8]) -> Vec<u8> {
        // ring's PKCS#8 v1 template: the inner ECPrivateKey starts at the 0x30
        // after the OCTET STRING header that follows the algorithm identifier.
        let marker = [0x04u8, 0x6d, 0x30, 0x6b];
        let at = der
            .windows(marker.len())
            .position(|w| w == marker)
            .expect("ring P-256 PKCS#8 layout");
        der[at + 2..].to_vec()
    }

    fn pem_block(label: &str, der: &[u8]) -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let mut out = format!("-----BEGIN {label}-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(chunk).unwrap());
            out.push('\n');
        }
        out.push_str(&format!("-----END {label}-----\n"));
        out
    }
}
