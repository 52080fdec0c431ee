//! One broker connection: pluggable transport, request framing
//! (size prefix, request header v1, response header v0) and version
//! negotiation at connect.
//!
//! A connection carries one request at a time. Any error while a request is
//! on the wire leaves the stream in an unknown state, so owners drop the
//! connection on error and open a new one on the next call.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::error::{KafkaError, Location};
use super::response_buf;
use super::sasl::{self, SaslCredentials};
use super::versions::{self, ApiVersions};

/// Anything a Kafka connection can run over (plain TCP or TLS).
pub trait KafkaStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> KafkaStream for T {}

pub type BoxStream = Box<dyn KafkaStream>;
pub type ConnectFuture<'a> = Pin<Box<dyn Future<Output = io::Result<BoxStream>> + Send + 'a>>;

/// Opens transport streams to `host:port` (TCP, or TLS: `super::tls`). SASL
/// runs on top, in `BrokerConn::open`, once versions are negotiated.
pub trait Connector: Send + Sync {
    fn connect<'a>(&'a self, addr: &'a str) -> ConnectFuture<'a>;
}

pub struct TcpConnector;

impl Connector for TcpConnector {
    fn connect<'a>(&'a self, addr: &'a str) -> ConnectFuture<'a> {
        Box::pin(async move {
            let s = TcpStream::connect(addr).await?;
            // Requests are written whole; Nagle would only add latency.
            s.set_nodelay(true)?;
            Ok(Box::new(s) as BoxStream)
        })
    }
}

/// A TLS failure inside `source` becomes `KafkaError::Tls` (fatal, with a
/// hint); anything else is what `other` makes of it.
fn tls_or(
    source: io::Error,
    at: Location,
    other: impl FnOnce(Location, io::Error) -> KafkaError,
) -> KafkaError {
    match crate::tls::rustls_error(&source) {
        Some(e) => KafkaError::Tls {
            at,
            reason: crate::tls::explain(e),
        },
        None => other(at, source),
    }
}

/// Largest response frame accepted; bounds what a broker (or a stray
/// non-Kafka peer) can make us allocate. Fetch sizes are capped below it.
pub const MAX_FRAME: usize = 256 * 1024 * 1024;

/// Largest response buffer allocated before its bytes arrive.
const PREALLOC_MAX: usize = 16 * 1024 * 1024;

pub struct BrokerConn {
    addr: String,
    stream: BoxStream,
    client_id: String,
    next_correlation: i32,
    pub versions: ApiVersions,
}

impl BrokerConn {
    /// Connects, negotiates API versions and, with `sasl`, logs in.
    pub async fn open(
        connector: &dyn Connector,
        addr: &str,
        client_id: &str,
        connect_timeout: Duration,
        request_timeout: Duration,
        sasl: Option<&SaslCredentials>,
    ) -> Result<BrokerConn, KafkaError> {
        let at = || Location::broker(addr);
        let stream = match tokio::time::timeout(connect_timeout, connector.connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => {
                return Err(tls_or(source, at(), |at, source| KafkaError::Connect {
                    at,
                    source,
                }));
            }
            Err(_) => {
                return Err(KafkaError::Timeout {
                    at: at(),
                    op: "connect",
                    after: connect_timeout,
                });
            }
        };
        let mut conn = BrokerConn {
            addr: addr.to_string(),
            stream,
            client_id: client_id.to_string(),
            next_correlation: 0,
            versions: ApiVersions::default(),
        };
        let body = conn
            .request(
                versions::API_KEY,
                versions::REQUEST_VERSION,
                &[],
                "ApiVersions",
                request_timeout,
            )
            .await?;
        conn.versions = versions::parse_response(body, &conn.addr)?;
        if let Some(creds) = sasl {
            sasl::authenticate(&mut conn, creds, request_timeout).await?;
        }
        tracing::debug!(broker = addr, "connected");
        Ok(conn)
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends one request and returns the response body (after the correlation id).
    pub async fn request(
        &mut self,
        api_key: i16,
        version: i16,
        body: &[u8],
        op: &'static str,
        timeout: Duration,
    ) -> Result<Bytes, KafkaError> {
        match tokio::time::timeout(timeout, self.roundtrip(api_key, version, body, op)).await {
            Ok(r) => r,
            Err(_) => Err(KafkaError::Timeout {
                at: Location::broker(&self.addr),
                op,
                after: timeout,
            }),
        }
    }

    async fn roundtrip(
        &mut self,
        api_key: i16,
        version: i16,
        body: &[u8],
        op: &'static str,
    ) -> Result<Bytes, KafkaError> {
        let correlation = self.next_correlation;
        self.next_correlation = self.next_correlation.wrapping_add(1);
        let at = || Location::broker(&self.addr);

        let client_id = &self.client_id.as_bytes()[..self.client_id.len().min(i16::MAX as usize)];
        let size = 2 + 2 + 4 + 2 + client_id.len() + body.len();
        let mut frame = Vec::with_capacity(4 + size);
        frame.extend_from_slice(&(size as i32).to_be_bytes());
        frame.extend_from_slice(&api_key.to_be_bytes());
        frame.extend_from_slice(&version.to_be_bytes());
        frame.extend_from_slice(&correlation.to_be_bytes());
        frame.extend_from_slice(&(client_id.len() as i16).to_be_bytes());
        frame.extend_from_slice(client_id);
        frame.extend_from_slice(body);
        // With TLS 1.3 a server that refuses our client certificate says so
        // only after the handshake: the first read carries its alert.
        let io_err = |source| {
            tls_or(source, Location::broker(&self.addr), |at, source| {
                KafkaError::Io { at, op, source }
            })
        };
        self.stream.write_all(&frame).await.map_err(io_err)?;
        self.stream.flush().await.map_err(io_err)?;

        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).await.map_err(io_err)?;
        let len = i32::from_be_bytes(len);
        if len < 4 || len as usize > MAX_FRAME {
            return Err(KafkaError::Protocol {
                at: at(),
                reason: format!("{op}: response frame size {len}"),
            });
        }
        let len = len as usize;
        // A length up to PREALLOC_MAX is taken at its word: one allocation
        // and no copy (at 1 MiB fetches a response is a little over 1 MiB,
        // and growing from 1 MiB copied the whole buffer once per fetch).
        // Past that, grow with the data actually received, so a forged
        // length cannot make us allocate MAX_FRAME up front.
        // The buffer comes from (and, once its records are dropped, goes
        // back to) a small pool: a fresh megabyte per fetch faults in anew.
        let mut buf = response_buf::take(len, len.min(PREALLOC_MAX));
        while buf.len() < len {
            buf.reserve((len - buf.len()).min(PREALLOC_MAX));
            let want = len - buf.len();
            let n = (&mut self.stream)
                .take(want as u64)
                .read_buf(&mut buf)
                .await
                .map_err(io_err)?;
            if n == 0 {
                return Err(io_err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed mid-response",
                )));
            }
        }
        let got = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        if got != correlation {
            // Out of step with the broker: the connection cannot be trusted.
            return Err(io_err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("correlation id {got}, expected {correlation}"),
            )));
        }
        Ok(response_buf::share(buf).slice(4..))
    }
}
