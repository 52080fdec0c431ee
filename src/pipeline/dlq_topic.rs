//! The optional per-route dead-letter topic (`dead_letter_topic`): every
//! dead letter is also produced there, Kafka-Connect style — the original
//! key, value and headers, plus `tally.dlq.*` headers saying why and where
//! from. Produced BEFORE the store commit that records the dead letter and
//! moves the offset: a crash in between re-produces it on restart (a
//! duplicate on the topic), never loses it.

use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::backoff::Backoff;
use crate::kafka::{KafkaError, OutRecord, Producer, partition_for_key};
use crate::store::DeadLetter;

/// Header names, stable: consumers of the topic key on them.
pub const REASON: &str = "tally.dlq.reason";
pub const CLASS: &str = "tally.dlq.class";
pub const ROUTE: &str = "tally.dlq.route";
pub const TOPIC: &str = "tally.dlq.topic";
pub const PARTITION: &str = "tally.dlq.partition";
pub const OFFSET: &str = "tally.dlq.offset";
pub const ATTEMPTS: &str = "tally.dlq.attempts";
pub const SCHEMA_ID: &str = "tally.dlq.schema.id";

/// One producer per daemon, connected on the first dead letter.
#[derive(Default)]
pub(crate) struct DeadLetterProducer {
    producer: OnceCell<Producer>,
}

impl DeadLetterProducer {
    /// Produce `letters` to `topic`, retrying transient failures with backoff
    /// until they are acknowledged. False only when `stop` (shutdown, or the
    /// partition revoked) interrupts.
    pub async fn publish(
        &self,
        shared: &Shared,
        stop: &CancellationToken,
        topic: &str,
        letters: &[DeadLetter],
    ) -> bool {
        if letters.is_empty() {
            return true;
        }
        let mut backoff = Backoff::new(shared.pipeline.retry_initial, shared.pipeline.retry_max);
        loop {
            match self.try_publish(shared, topic, letters).await {
                Ok(()) => return true,
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(
                        dead_letter_topic = topic, records = letters.len(), retry_in = ?delay,
                        "cannot produce dead letters (the offset waits for them): {e}"
                    );
                    tokio::select! {
                        _ = stop.cancelled() => return false,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    async fn try_publish(
        &self,
        shared: &Shared,
        topic: &str,
        letters: &[DeadLetter],
    ) -> Result<(), KafkaError> {
        let producer = self
            .producer
            .get_or_try_init(|| async { Producer::connect(shared.client.config()).await })
            .await?;
        let partitions = producer.partition_count(topic).await?.max(1);
        // Keyed records go where Kafka's default partitioner puts the key;
        // keyless ones keep their origin partition number (mod the count).
        let mut by_partition: std::collections::BTreeMap<i32, Vec<OutRecord>> = Default::default();
        for d in letters {
            let partition = match &d.key {
                Some(k) => partition_for_key(k, partitions),
                None => d.partition.rem_euclid(partitions),
            };
            by_partition.entry(partition).or_default().push(record(d));
        }
        for (partition, records) in by_partition {
            producer.send(topic, partition, records).await?;
        }
        Ok(())
    }
}

/// The dead letter as a DLQ-topic record. A tombstone's value and a null
/// header value become empty (the producer has no null value).
pub fn record(d: &DeadLetter) -> OutRecord {
    let mut headers: Vec<(String, Vec<u8>)> = d
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().unwrap_or_default()))
        .collect();
    let mut add = |k: &str, v: String| headers.push((k.to_string(), v.into_bytes()));
    add(REASON, d.reason.clone());
    add(CLASS, d.class.clone());
    add(ROUTE, d.route.clone());
    add(TOPIC, d.topic.clone());
    add(PARTITION, d.partition.to_string());
    add(OFFSET, d.offset.to_string());
    add(ATTEMPTS, d.attempts.to_string());
    if let Some(id) = d
        .payload
        .as_deref()
        .and_then(crate::format::framed_schema_id)
    {
        add(SCHEMA_ID, id.to_string());
    }
    OutRecord {
        key: d.key.clone(),
        value: d.payload.clone().unwrap_or_default(),
        headers,
    }
}
