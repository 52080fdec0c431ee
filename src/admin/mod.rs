//! The admin HTTP server: Prometheus metrics, health and readiness, the
//! state API behind the CLI's read commands, and a publish endpoint.
//!
//! Off unless `[admin]` is configured; binds 127.0.0.1 by default; HTTPS
//! (optionally requiring client certificates) with `[admin.tls]`. Reads are
//! open (the bind address, or the client CA, is the boundary, like a
//! Prometheus exporter); anything that changes state needs the bearer token.

pub mod auth;
pub mod client;
pub mod metrics;
mod routes;
mod tls_listener;
pub mod views;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use auth::Token;
pub use client::{AdminClient, ClientError};

use crate::config::{AdminSettings, Settings};
use crate::pipeline::{Live, kafka_config};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(
        "admin API: cannot listen on {addr}: {source}; change [admin] listen or stop what uses the port"
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("admin API: {0}")]
    Token(String),
    #[error("admin API: {0}")]
    Kafka(#[from] crate::kafka::SecurityError),
    #[error("admin API: [admin.tls] {0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// A running admin server; `stop` ends it.
#[derive(Debug)]
pub struct AdminServer {
    stop: CancellationToken,
    task: JoinHandle<()>,
    pub addr: SocketAddr,
}

impl AdminServer {
    pub async fn start(
        admin: &AdminSettings,
        settings: &Settings,
        live: Arc<Live>,
    ) -> Result<AdminServer, AdminError> {
        let token = Token::resolve(admin)?;
        // Read the TLS files before binding: a bad file fails the start, named.
        let tls = match &admin.tls {
            Some(t) => Some(crate::tls::server_config(
                &t.cert_file,
                &t.key_file,
                t.client_ca_file.as_deref(),
            )?),
            None => None,
        };
        let listener = tokio::net::TcpListener::bind(admin.listen)
            .await
            .map_err(|source| AdminError::Bind {
                addr: admin.listen,
                source,
            })?;
        let addr = listener.local_addr().unwrap_or(admin.listen);
        if !addr.ip().is_loopback() {
            tracing::warn!(%addr, "admin API listens beyond loopback: its read endpoints are not authenticated");
        }
        if token.is_none() {
            tracing::info!("no admin token configured: publish and prune endpoints are disabled");
        }
        let state = Arc::new(routes::AdminState::new(
            live,
            token,
            kafka_config(&settings.kafka)?,
        ));
        let stop = CancellationToken::new();
        let shutdown = stop.clone();
        let app = routes::router(state);
        let scheme = if tls.is_some() { "https" } else { "http" };
        let task = match tls {
            None => tokio::spawn(serve(listener, app, shutdown)),
            Some(config) => {
                let listener = tls_listener::TlsListener::new(listener, config, stop.clone())
                    .map_err(|source| AdminError::Bind {
                        addr: admin.listen,
                        source,
                    })?;
                tokio::spawn(serve(listener, app, shutdown))
            }
        };
        let mtls = admin
            .tls
            .as_ref()
            .is_some_and(|t| t.client_ca_file.is_some());
        tracing::info!(%addr, scheme, client_certificates = mtls, "admin API listening");
        Ok(AdminServer { stop, task, addr })
    }

    /// Stop accepting, give open requests a moment, then end.
    pub async fn stop(self) {
        self.stop.cancel();
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(5), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

async fn serve<L>(listener: L, app: axum::Router, shutdown: CancellationToken)
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(e) = served {
        tracing::error!("admin API stopped: {e}");
    }
}
