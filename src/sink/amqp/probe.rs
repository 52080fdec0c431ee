//! `tally check --connect` for the amqp sink: connect, open a channel and
//! look up each mapped exchange passively (nothing is created or changed).

use lapin::options::ExchangeDeclareOptions;
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::FieldTable;
use lapin::{Connection, ExchangeKind};

use super::{AmqpError, AmqpSink};
use crate::sink::probe::ProbeReport;

impl AmqpSink {
    /// Connects within `connect_timeout`; an exchange that does not exist is
    /// fine when tally declares it at startup (`declare = true`), a problem otherwise.
    pub async fn probe(&self) -> ProbeReport {
        let conn = match tokio::time::timeout(self.cfg.connect_timeout, self.open()).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return failed(e.to_string()),
            Err(_) => {
                return failed(format!(
                    "amqp sink: no connection within {:?}",
                    self.cfg.connect_timeout
                ));
            }
        };
        let report = self.look_up_exchanges(&conn).await;
        let _ = conn.close(200, "tally check".into()).await;
        report
    }

    async fn look_up_exchanges(&self, conn: &Connection) -> ProbeReport {
        let mut names: Vec<&String> = self.cfg.exchanges.values().collect();
        names.sort();
        names.dedup();
        let (mut found, mut missing) = (Vec::new(), Vec::new());
        for name in names {
            // A passive declare of a missing exchange closes the channel: one channel each.
            let channel = match conn.create_channel().await {
                Ok(c) => c,
                Err(e) => return failed(AmqpError::from_lapin("open channel", &e).to_string()),
            };
            let passive = ExchangeDeclareOptions {
                passive: true,
                ..ExchangeDeclareOptions::default()
            };
            match channel
                .exchange_declare(
                    name.as_str().into(),
                    ExchangeKind::Topic,
                    passive,
                    FieldTable::default(),
                )
                .await
            {
                Ok(()) => {
                    found.push(name.as_str());
                    let _ = channel.close(200, "tally check".into()).await;
                }
                Err(e) if not_found(&e) => missing.push(name.as_str()),
                Err(e) => return failed(AmqpError::from_lapin("exchange lookup", &e).to_string()),
            }
        }
        let mut line = format!("ok (connected; exchanges present: [{}]", found.join(", "));
        if !missing.is_empty() {
            line += &format!("; missing: [{}]", missing.join(", "));
            if !self.cfg.declare {
                return failed(format!(
                    "connected, but exchanges missing and declare = false: [{}]",
                    missing.join(", ")
                ));
            }
            line += ", declared at startup";
        }
        line.push(')');
        ProbeReport { line, ok: true }
    }
}

fn failed(message: String) -> ProbeReport {
    ProbeReport::failed(message)
}

/// The broker's 404 NOT_FOUND channel close for a passive declare.
fn not_found(e: &lapin::Error) -> bool {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(p) => {
            matches!(p.kind(), AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND))
        }
        _ => false,
    }
}
