//! TLS transport for broker connections: TCP, then a rustls handshake that
//! verifies the broker's certificate against the host it is reached under
//! (or the configured `server_name`).

use std::io;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use super::conn::{BoxStream, ConnectFuture, Connector};

#[derive(Debug, Clone)]
pub struct TlsTransport {
    pub config: Arc<rustls::ClientConfig>,
    /// Verify every broker's certificate against this name instead of its host.
    pub server_name: Option<ServerName<'static>>,
}

pub struct TlsConnector {
    transport: TlsTransport,
}

impl TlsConnector {
    pub fn new(transport: TlsTransport) -> Self {
        TlsConnector { transport }
    }
}

impl Connector for TlsConnector {
    fn connect<'a>(&'a self, addr: &'a str) -> ConnectFuture<'a> {
        Box::pin(async move {
            let name = match &self.transport.server_name {
                Some(n) => n.clone(),
                None => host_name(addr)?,
            };
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let tls = tokio_rustls::TlsConnector::from(Arc::clone(&self.transport.config))
                .connect(name, tcp)
                .await?;
            Ok(Box::new(tls) as BoxStream)
        })
    }
}

/// The host part of "host:port" ("[::1]:9093" too) as a TLS server name.
fn host_name(addr: &str) -> io::Result<ServerName<'static>> {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("broker host \"{host}\" is not a valid TLS server name ({e}); set kafka.tls.server_name"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_from_addresses() {
        assert!(
            matches!(host_name("kafka-1.internal:9093").unwrap(), ServerName::DnsName(d) if d.as_ref() == "kafka-1.internal")
        );
        assert!(matches!(
            host_name("127.0.0.1:9093").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            host_name("[::1]:9093").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(host_name("bad host!:1").is_err());
    }
}
