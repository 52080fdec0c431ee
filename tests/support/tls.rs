//! Test PKI made at test time (rcgen, ring) and an HTTPS front for the
//! in-process receivers that requires a client certificate (tokio-rustls).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::tls_rig::TestCa;

/// PEM files under one directory: a CA, a server cert for 127.0.0.1 and
/// localhost, a client cert from that CA, and a client cert from another CA.
pub struct TestPki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub stranger_cert: PathBuf,
    pub stranger_key: PathBuf,
}

impl TestPki {
    pub fn generate(dir: &Path) -> TestPki {
        let ca = TestCa::new("tally test CA");
        let stranger_ca = TestCa::new("some other CA");
        let (server_cert, server_key) = ca.issue(&["127.0.0.1", "localhost"], false);
        let (client_cert, client_key) = ca.issue(&["tally"], false);
        let (stranger_cert, stranger_key) = stranger_ca.issue(&["tally"], false);
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("write PEM");
            path
        };
        TestPki {
            ca: write("ca.pem", &ca.pem),
            server_cert: write("server.pem", &server_cert),
            server_key: write("server.key", &server_key),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client.key", &client_key),
            stranger_cert: write("stranger.pem", &stranger_cert),
            stranger_key: write("stranger.key", &stranger_key),
        }
    }

    /// rustls server config: our server cert; client certs from our CA required.
    pub fn server_config(&self) -> rustls::ServerConfig {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&self.ca).expect("CA PEM") {
            roots.add(cert.expect("CA cert")).expect("add CA");
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .expect("client verifier");
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.server_cert)
            .expect("server PEM")
            .map(|c| c.expect("server cert"))
            .collect();
        let key = PrivateKeyDer::from_pem_file(&self.server_key).expect("server key");
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocols")
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .expect("server config")
    }
}

/// `router` served over TLS on a free loopback port, on `rt`.
pub struct TlsFront {
    pub addr: std::net::SocketAddr,
    handshakes_failed: Arc<AtomicUsize>,
    handshakes_ok: Arc<AtomicUsize>,
}

impl TlsFront {
    pub fn start(
        rt: &tokio::runtime::Runtime,
        router: Router,
        config: rustls::ServerConfig,
    ) -> Self {
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind TLS front");
        let addr = listener.local_addr().expect("local addr");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let failed = Arc::new(AtomicUsize::new(0));
        let ok = Arc::new(AtomicUsize::new(0));
        let (f, o) = (Arc::clone(&failed), Arc::clone(&ok));
        rt.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, router) = (acceptor.clone(), router.clone());
                let (f, o) = (Arc::clone(&f), Arc::clone(&o));
                tokio::spawn(async move {
                    let tls = match acceptor.accept(tcp).await {
                        Ok(tls) => tls,
                        Err(_) => {
                            f.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                    };
                    o.fetch_add(1, Ordering::SeqCst);
                    let svc = TowerToHyperService::new(router);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        TlsFront {
            addr,
            handshakes_failed: failed,
            handshakes_ok: ok,
        }
    }

    pub fn url(&self) -> String {
        format!("https://{}/in", self.addr)
    }

    pub fn handshakes_failed(&self) -> usize {
        self.handshakes_failed.load(Ordering::SeqCst)
    }

    pub fn handshakes_ok(&self) -> usize {
        self.handshakes_ok.load(Ordering::SeqCst)
    }
}
