//! A small HTTP/1.1 client for the daemon's admin API, so state commands can
//! ask a running tally instead of opening its (locked) store. Plain HTTP to
//! the configured address, or HTTPS when the config has `[admin.tls]`
//! (trusting its `ca_file`, else the server's own `cert_file`).

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;

use super::Token;
use crate::config::AdminSettings;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the daemon's admin API at {addr}: {detail}")]
    Connect { addr: SocketAddr, detail: String },
    #[error("admin API at {addr}: {detail}")]
    Http { addr: SocketAddr, detail: String },
    #[error("admin API at {addr} answered {status}: {message}")]
    Status {
        addr: SocketAddr,
        status: StatusCode,
        message: String,
    },
    #[error("admin API at {addr} timed out after {after:?}")]
    Timeout { addr: SocketAddr, after: Duration },
    #[error("admin API: [admin.tls] {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("admin API at {addr}: TLS handshake failed: {detail}")]
    Handshake { addr: SocketAddr, detail: String },
}

/// How the CLI speaks TLS to the daemon.
#[derive(Clone)]
struct ClientTls {
    connector: tokio_rustls::TlsConnector,
    server_name: ServerName<'static>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub struct AdminClient {
    addr: SocketAddr,
    token: Option<Token>,
    tls: Option<ClientTls>,
}

const TIMEOUT: Duration = Duration::from_secs(30);

impl AdminClient {
    /// A client for the daemon configured by `admin`; an unspecified listen
    /// address (0.0.0.0) is reached on loopback. The token is resolved from
    /// the same `token_env`/`token_file` when available here. With
    /// `[admin.tls]` its files are read now, so a bad one fails here, named.
    pub fn new(admin: &AdminSettings) -> Result<AdminClient, ClientError> {
        let mut addr = admin.listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(if addr.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        let tls = match &admin.tls {
            None => None,
            Some(t) => {
                let trust = t.ca_file.as_deref().unwrap_or(&t.cert_file);
                let identity = t
                    .client_cert_file
                    .as_deref()
                    .zip(t.client_key_file.as_deref());
                let config = crate::tls::client_config(Some(trust), identity)?;
                let server_name = match &t.server_name {
                    Some(name) => ServerName::try_from(name.clone()).map_err(|e| {
                        crate::tls::TlsError::Setup(format!("server_name {name:?}: {e}"))
                    })?,
                    None => ServerName::IpAddress(addr.ip().into()),
                };
                Some(ClientTls {
                    connector: tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)),
                    server_name,
                })
            }
        };
        Ok(AdminClient {
            addr,
            token: Token::resolve(admin).ok().flatten(),
            tls,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// GET `path`, whole body; a non-2xx answer is an error carrying its message.
    pub async fn get(&self, path: &str) -> Result<Bytes, ClientError> {
        self.request(Method::GET, path, Bytes::new()).await
    }

    pub async fn post(&self, path: &str, body: Bytes) -> Result<Bytes, ClientError> {
        self.request(Method::POST, path, body).await
    }

    /// GET `path`, handing each chunk of the body to `chunk` as it arrives.
    pub async fn get_streaming(
        &self,
        path: &str,
        mut chunk: impl FnMut(&[u8]),
    ) -> Result<(), ClientError> {
        let resp = tokio::time::timeout(TIMEOUT, self.send(Method::GET, path, Bytes::new()))
            .await
            .map_err(|_| self.timeout())??;
        let status = resp.status();
        let mut body = resp.into_body();
        if !status.is_success() {
            let bytes = body
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            return Err(self.status_error(status, &bytes));
        }
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| self.http(e))?;
            if let Ok(data) = frame.into_data() {
                chunk(&data);
            }
        }
        Ok(())
    }

    async fn request(&self, method: Method, path: &str, body: Bytes) -> Result<Bytes, ClientError> {
        let exchange = async {
            let resp = self.send(method, path, body).await?;
            let status = resp.status();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| self.http(e))?
                .to_bytes();
            if status.is_success() {
                Ok(bytes)
            } else {
                Err(self.status_error(status, &bytes))
            }
        };
        tokio::time::timeout(TIMEOUT, exchange)
            .await
            .map_err(|_| self.timeout())?
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        let stream = tokio::net::TcpStream::connect(self.addr)
            .await
            .map_err(|e| ClientError::Connect {
                addr: self.addr,
                detail: e.to_string(),
            })?;
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, self.addr.to_string())
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(t) = &self.token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {}", t.as_str()));
        }
        let req = req.body(Full::new(body)).map_err(|e| self.http(e))?;
        match &self.tls {
            None => self.exchange(stream, req).await,
            Some(tls) => {
                let stream = tls
                    .connector
                    .connect(tls.server_name.clone(), stream)
                    .await
                    .map_err(|e| ClientError::Handshake {
                        addr: self.addr,
                        detail: crate::tls::rustls_error(&e)
                            .map_or_else(|| e.to_string(), crate::tls::explain),
                    })?;
                self.exchange(stream, req).await
            }
        }
    }

    /// One HTTP/1.1 request over an open connection (plain or TLS).
    async fn exchange<IO>(
        &self,
        io: IO,
        req: Request<Full<Bytes>>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| self.http(e))?;
        let conn = tokio::spawn(conn);
        match sender.send_request(req).await {
            Ok(resp) => Ok(resp),
            // The connection's own error says why (e.g. the server refused
            // our certificate); the request's only says it was cancelled.
            Err(e) => match tokio::time::timeout(Duration::from_secs(1), conn).await {
                Ok(Ok(Err(conn_error))) => Err(self.http(conn_error)),
                _ => Err(self.http(e)),
            },
        }
    }

    /// hyper's own message is often just "connection error"; the cause (a
    /// TLS alert such as CertificateRequired) is further down the chain.
    fn http(&self, e: impl std::error::Error) -> ClientError {
        let mut detail = e.to_string();
        let mut source = e.source();
        while let Some(cause) = source {
            let text = match cause.downcast_ref::<std::io::Error>() {
                Some(io) => {
                    crate::tls::rustls_error(io).map_or_else(|| io.to_string(), crate::tls::explain)
                }
                None => cause.to_string(),
            };
            if !detail.contains(&text) {
                detail.push_str(": ");
                detail.push_str(&text);
            }
            source = cause.source();
        }
        ClientError::Http {
            addr: self.addr,
            detail,
        }
    }

    fn timeout(&self) -> ClientError {
        ClientError::Timeout {
            addr: self.addr,
            after: TIMEOUT,
        }
    }

    fn status_error(&self, status: StatusCode, body: &[u8]) -> ClientError {
        let message = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
        ClientError::Status {
            addr: self.addr,
            status,
            message,
        }
    }
}

/// Percent-encode one path segment (everything but RFC 3986 unreserved).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_escaped() {
        assert_eq!(encode_segment("t1/sub 2/ü"), "t1%2Fsub%202%2F%C3%BC");
        assert_eq!(encode_segment("a-b_c.d~e"), "a-b_c.d~e");
    }
}
