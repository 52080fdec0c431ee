//! A tiny consumer of tally's AMQP envelopes: binds a queue to an exchange,
//! writes one JSON line per message to stdout —
//! `{"message_id": …, "routing_key": …, "topic": …, "notifiedAt": …, "event": …}` —
//! and drops re-sends (same `message_id`) seen within the last `KEEP` ids:
//! tally is at-least-once on the wire, exactly once with this filter.
//!
//!   AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f \
//!     cargo run --example amqp_consumer -- bie-events-contention-associated my-queue
//!
//! Acks each message after its line is written (a crash re-delivers, the
//! filter is in memory: keep ids durably if duplicates across consumer
//! restarts matter).

use std::collections::{HashSet, VecDeque};
use std::io::Write;

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};

const KEEP: usize = 100_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("AMQP_URL").map_err(|_| anyhow::anyhow!("set AMQP_URL"))?;
    let mut args = std::env::args().skip(1);
    let (Some(exchange), Some(queue)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: amqp_consumer EXCHANGE QUEUE");
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let conn = Connection::connect(&url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    ch.queue_declare(queue.as_str().into(), durable, FieldTable::default())
        .await?;
    ch.queue_bind(
        queue.as_str().into(),
        exchange.as_str().into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    let mut consumer = ch
        .basic_consume(
            queue.as_str().into(),
            "amqp_consumer".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut seen = HashSet::new();
    let mut order = VecDeque::new();
    let mut out = std::io::stdout().lock();
    while let Some(delivery) = consumer.next().await {
        let delivery = delivery?;
        let id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.as_str().to_string());
        let fresh = match &id {
            Some(id) => seen.insert(id.clone()),
            None => true,
        };
        if fresh {
            let envelope: serde_json::Value = serde_json::from_slice(&delivery.data)?;
            let line = serde_json::json!({
                "message_id": id,
                "routing_key": delivery.routing_key.as_str(),
                "topic": envelope["topic"],
                "notifiedAt": envelope["notifiedAt"],
                "event": envelope["event"],
            });
            writeln!(out, "{line}")?;
            out.flush()?;
            if let Some(id) = id {
                order.push_back(id);
                if order.len() > KEEP
                    && let Some(old) = order.pop_front()
                {
                    seen.remove(&old);
                }
            }
        }
        delivery.ack(BasicAckOptions::default()).await?;
    }
    Ok(())
}
