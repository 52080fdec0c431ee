//! Sink `amqp`: each record is published to the exchange mapped from its
//! Kafka topic, as the envelope `{topic, notifiedAt, event}` — persistent,
//! `content-type: application/json`, `message_id` = the dedupe key (or
//! `topic/partition/offset`), routing key = the Kafka topic, `mandatory` so
//! that an unroutable message comes back instead of vanishing.
//!
//! The ack is the publisher confirm. One connection and one confirm-mode
//! channel serve every partition; a `deliver` call publishes its records in
//! order and then waits for their confirms. A lost connection fails the
//! unconfirmed records (transient): the worker re-sends them, and the next
//! call reconnects and redeclares first. A re-send carries the same
//! `message_id`, for consumers to deduplicate in that crash/reconnect window.

mod error;
mod probe;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::future::join_all;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::Mutex;

pub use error::{AmqpError, Rejection};

use super::envelope::{envelope, idempotency_key};
use super::secrets::{self, SecretError};
use super::{Outgoing, SinkError};
use crate::config::{AmqpSinkSettings, ExchangeType, RejectPolicy};

/// A rejection the worker will retry (policy `retry`): see `deliver_one_by_one`.
fn retried_rejection(e: &AmqpError) -> bool {
    matches!(
        e,
        AmqpError::Rejected {
            policy: RejectPolicy::Retry,
            ..
        }
    )
}

#[derive(Debug, thiserror::Error)]
pub enum AmqpSetupError {
    #[error("amqp sink: {0}")]
    Secret(#[from] SecretError),
    #[error("amqp sink: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("amqp sink: cannot read {what} {path}: {message}")]
    Read {
        what: &'static str,
        path: String,
        message: String,
    },
}

/// A file's bytes, or an error naming the config field and the file.
fn read_file(what: &'static str, path: &std::path::Path) -> Result<Vec<u8>, AmqpSetupError> {
    std::fs::read(path).map_err(|e| AmqpSetupError::Read {
        what,
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// One live connection with its confirm-mode channel.
struct Link {
    conn: Connection,
    channel: lapin::Channel,
    /// Set when a confirm timed out: the channel cannot be trusted any more.
    poisoned: AtomicBool,
}

impl Link {
    fn usable(&self) -> bool {
        !self.poisoned.load(Ordering::Relaxed)
            && self.conn.status().connected()
            && self.channel.status().connected()
    }
}

pub struct AmqpSink {
    cfg: AmqpSinkSettings,
    /// The resolved URL (a secret: never logged or printed).
    url: String,
    ca_pem: Option<String>,
    /// Client certificate chain and key (PEM) for mutual TLS.
    identity: Option<(Vec<u8>, Vec<u8>)>,
    link: Mutex<Option<Arc<Link>>>,
    /// One record at a time (see `deliver_one_by_one`); on at start, off
    /// after a call in which every record was confirmed.
    careful: AtomicBool,
}

impl std::fmt::Debug for AmqpSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpSink")
            .field("exchanges", &self.cfg.exchanges)
            .finish_non_exhaustive()
    }
}

impl AmqpSink {
    /// Reads the URL, CA and client identity; no connection is made yet (the
    /// first delivery connects).
    pub fn new(cfg: &AmqpSinkSettings) -> Result<AmqpSink, AmqpSetupError> {
        let url = secrets::resolve("sinks.amqp.url", &cfg.url)?;
        let identity_files = cfg.cert_file.as_deref().zip(cfg.key_file.as_deref());
        if cfg.ca_file.is_some() || identity_files.is_some() {
            // The shared loader's checks first (missing file, not PEM, key not
            // matching the certificate), so a mistake is named here rather
            // than surfacing as a handshake failure inside lapin.
            crate::tls::client_config(cfg.ca_file.as_deref(), identity_files)?;
        }
        let ca_pem = cfg
            .ca_file
            .as_deref()
            .map(|p| read_file("ca_file", p))
            .transpose()?
            .map(|pem| String::from_utf8_lossy(&pem).into_owned());
        let identity = identity_files
            .map(|(cert, key)| {
                Ok::<_, AmqpSetupError>((
                    read_file("cert_file", cert)?,
                    read_file("key_file", key)?,
                ))
            })
            .transpose()?;
        Ok(AmqpSink {
            cfg: cfg.clone(),
            url,
            ca_pem,
            identity,
            link: Mutex::new(None),
            careful: AtomicBool::new(true),
        })
    }

    pub async fn deliver(&self, batch: &[&Outgoing]) -> Vec<Result<(), SinkError>> {
        let link = match self.link().await {
            Ok(l) => l,
            Err(e) => {
                return batch
                    .iter()
                    .map(|_| Err(SinkError::Amqp(e.clone())))
                    .collect();
            }
        };
        let results = if self.careful.load(Ordering::Relaxed) {
            self.deliver_one_by_one(&link, batch).await
        } else {
            self.deliver_pipelined(&link, batch).await
        };
        if results
            .iter()
            .any(|r| matches!(r, Err(AmqpError::ConfirmTimeout { .. })))
        {
            link.poisoned.store(true, Ordering::Relaxed);
        }
        if results
            .iter()
            .any(|r| matches!(r, Err(e) if retried_rejection(e)))
        {
            self.careful.store(true, Ordering::Relaxed);
        }
        results
            .into_iter()
            .map(|r| r.map_err(SinkError::Amqp))
            .collect()
    }

    /// Publish in order (per-partition order on the wire), then await the confirms.
    async fn deliver_pipelined(
        &self,
        link: &Link,
        batch: &[&Outgoing],
    ) -> Vec<Result<(), AmqpError>> {
        let mut pending = Vec::with_capacity(batch.len());
        for o in batch {
            pending.push(self.publish(link, o).await);
        }
        join_all(
            pending
                .into_iter()
                .map(|p| async move { self.confirmed(p?).await }),
        )
        .await
    }

    /// While the broker rejects (no queue bound, nacks), a pipelined batch
    /// could straddle the moment it starts accepting and land a later record
    /// before an earlier one's retry. So: one record at a time, and nothing
    /// after the first failure, until a whole call succeeds.
    async fn deliver_one_by_one(
        &self,
        link: &Link,
        batch: &[&Outgoing],
    ) -> Vec<Result<(), AmqpError>> {
        let mut out = Vec::with_capacity(batch.len());
        let mut failed = false;
        for o in batch {
            if failed {
                out.push(Err(AmqpError::HeldBack));
                continue;
            }
            let r = match self.publish(link, o).await {
                Ok(confirm) => self.confirmed(confirm).await,
                Err(e) => Err(e),
            };
            // A record dead-lettered by policy is resolved: going on keeps order.
            failed = matches!(&r, Err(e) if !matches!(e, AmqpError::Rejected { policy: RejectPolicy::DeadLetter, .. }));
            out.push(r);
        }
        if !failed {
            self.careful.store(false, Ordering::Relaxed);
        }
        out
    }

    async fn confirmed(&self, confirm: lapin::PublisherConfirm) -> Result<(), AmqpError> {
        let timeout = self.cfg.confirm_timeout;
        match tokio::time::timeout(timeout, confirm).await {
            Err(_) => Err(AmqpError::ConfirmTimeout {
                secs: timeout.as_secs(),
            }),
            Ok(Err(e)) => Err(AmqpError::from_lapin("waiting for the confirm", &e)),
            Ok(Ok(c)) => self.judge(c),
        }
    }

    async fn publish(
        &self,
        link: &Link,
        o: &Outgoing,
    ) -> Result<lapin::PublisherConfirm, AmqpError> {
        let exchange = self
            .cfg
            .exchanges
            .get(&*o.topic)
            .ok_or_else(|| AmqpError::Unmapped {
                topic: o.topic.to_string(),
            })?;
        // Kafka coordinates, for consumers that check order within a partition.
        let mut headers = FieldTable::default();
        headers.insert("x-tally-partition".into(), AMQPValue::LongInt(o.partition));
        headers.insert("x-tally-offset".into(), AMQPValue::LongLongInt(o.offset));
        let props = BasicProperties::default()
            .with_headers(headers)
            .with_message_id(idempotency_key(o).into())
            .with_content_type("application/json".into())
            // 2 = persistent: written to disk by durable queues before the confirm.
            .with_delivery_mode(2)
            .with_timestamp(o.received_at.timestamp().max(0) as u64)
            .with_app_id("tally".into());
        link.channel
            .basic_publish(
                exchange.as_str().into(),
                (&*o.topic).into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &envelope(o),
                props,
            )
            .await
            .map_err(|e| AmqpError::from_lapin("publish", &e))
    }

    fn judge(&self, c: Confirmation) -> Result<(), AmqpError> {
        match c {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(returned)) => Err(AmqpError::Rejected {
                what: Rejection::Unroutable,
                detail: format!("{} {}", returned.reply_code, returned.reply_text),
                policy: self.cfg.on_unroutable,
            }),
            Confirmation::Nack(_) => Err(AmqpError::Rejected {
                what: Rejection::Nack,
                detail: "basic.nack".to_string(),
                policy: self.cfg.on_nack,
            }),
            // Confirm mode is selected on every channel we publish on.
            Confirmation::NotRequested => Err(AmqpError::Unavailable {
                context: "confirm",
                message: "channel not in confirm mode".to_string(),
            }),
        }
    }

    /// The current link, or a new one: connect, confirm mode, declare exchanges.
    async fn link(&self) -> Result<Arc<Link>, AmqpError> {
        let mut guard = self.link.lock().await;
        if let Some(l) = guard.as_ref()
            && l.usable()
        {
            return Ok(Arc::clone(l));
        }
        if let Some(old) = guard.take() {
            tracing::warn!("amqp sink: connection lost; reconnecting");
            // Best effort; the broker drops it anyway when the socket closes.
            tokio::spawn(async move {
                let _ = old.conn.close(200, "reconnecting".into()).await;
            });
        }
        let link = Arc::new(
            tokio::time::timeout(self.cfg.connect_timeout, self.connect())
                .await
                .map_err(|_| AmqpError::Unavailable {
                    context: "connect",
                    message: format!("no connection within {:?}", self.cfg.connect_timeout),
                })??,
        );
        *guard = Some(Arc::clone(&link));
        Ok(link)
    }

    /// A connection to the broker (TLS per the URL scheme, `ca_file` trusted,
    /// the client identity presented when the broker asks).
    async fn open(&self) -> Result<Connection, AmqpError> {
        // lapin's rustls uses the process default provider; ring is the only one built.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let props = ConnectionProperties::default()
            .with_connection_name(concat!("tally/", env!("CARGO_PKG_VERSION")).into());
        let runtime =
            lapin::runtime::default_runtime().map_err(|e| AmqpError::from_lapin("runtime", &e))?;
        let tls = lapin::tcp::OwnedTLSConfig {
            identity: self
                .identity
                .as_ref()
                .map(|(pem, key)| lapin::tcp::OwnedIdentity::PKCS8 {
                    pem: pem.clone(),
                    key: key.clone(),
                }),
            cert_chain: self.ca_pem.clone(),
        };
        Connection::connect_with_config(&self.url, props, tls, runtime)
            .await
            .map_err(|e| AmqpError::from_lapin("connect", &e))
    }

    async fn connect(&self) -> Result<Link, AmqpError> {
        let conn = self.open().await?;
        let channel = conn
            .create_channel()
            .await
            .map_err(|e| AmqpError::from_lapin("open channel", &e))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| AmqpError::from_lapin("confirm.select", &e))?;
        if self.cfg.declare {
            let kind = match self.cfg.exchange_type {
                ExchangeType::Topic => ExchangeKind::Topic,
                ExchangeType::Fanout => ExchangeKind::Fanout,
                ExchangeType::Direct => ExchangeKind::Direct,
            };
            let mut names: Vec<&String> = self.cfg.exchanges.values().collect();
            names.sort();
            names.dedup();
            for name in names {
                channel
                    .exchange_declare(
                        name.as_str().into(),
                        kind.clone(),
                        ExchangeDeclareOptions {
                            durable: true,
                            ..ExchangeDeclareOptions::default()
                        },
                        FieldTable::default(),
                    )
                    .await
                    .map_err(|e| AmqpError::from_lapin("declare exchange", &e))?;
            }
        }
        tracing::info!(
            exchanges = self.cfg.exchanges.len(),
            "amqp sink: connected, confirm mode on, exchanges declared"
        );
        Ok(Link {
            conn,
            channel,
            poisoned: AtomicBool::new(false),
        })
    }
}
