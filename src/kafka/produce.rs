//! Producing, on rskafka (its produce path works against our brokers; only
//! its fetch path is replaced). rskafka has no timeouts of its own and
//! retries some errors forever, so every call is bounded here.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder, Credentials, SaslConfig};
use rskafka::record::Record;
use tokio::sync::Mutex;

use super::client::KafkaConfig;
use super::error::{KafkaError, Location};
use crate::config::SaslMechanism;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutRecord {
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    /// rskafka keeps headers in a map: a repeated key keeps its last value.
    pub headers: Vec<(String, Vec<u8>)>,
}

pub struct Producer {
    client: Client,
    cfg: KafkaConfig,
    partitions: Mutex<HashMap<(String, i32), Arc<PartitionClient>>>,
}

impl Producer {
    pub async fn connect(cfg: &KafkaConfig) -> Result<Producer, KafkaError> {
        let at = Location {
            broker: Some(cfg.brokers.join(",")),
            ..Default::default()
        };
        let mut builder = ClientBuilder::new(cfg.brokers.clone()).client_id(cfg.client_id.as_str());
        if let Some(tls) = &cfg.tls {
            if tls.server_name.is_some() {
                // rskafka verifies each broker's certificate against its host.
                return Err(KafkaError::Invalid(
                    "kafka.tls.server_name is not supported for producing (tally produce, the admin publish endpoint): \
                     the producer verifies each broker's certificate against the host it connects to"
                        .into(),
                ));
            }
            builder = builder.tls_config(Arc::clone(&tls.config));
        }
        if let Some(sasl) = &cfg.sasl {
            let creds = Credentials::new(sasl.username.clone(), sasl.password.clone());
            builder = builder.sasl_config(match sasl.mechanism {
                SaslMechanism::Plain => SaslConfig::Plain(creds),
                SaslMechanism::ScramSha256 => SaslConfig::ScramSha256(creds),
                SaslMechanism::ScramSha512 => SaslConfig::ScramSha512(creds),
            });
        }
        if cfg.tls.is_some() || cfg.sasl.is_some() {
            // rskafka retries a refused handshake or login until our timeout
            // runs out; our own client says why, once.
            super::client::ClusterClient::new(cfg.clone())
                .check_connect()
                .await?;
        }
        let build = builder.build();
        let client = bounded(
            build,
            cfg.connect_timeout + cfg.request_timeout,
            "producer connect",
            at,
        )
        .await?;
        Ok(Producer {
            client,
            cfg: cfg.clone(),
            partitions: Mutex::new(HashMap::new()),
        })
    }

    pub async fn partition_count(&self, topic: &str) -> Result<i32, KafkaError> {
        let at = Location {
            topic: Some(topic.to_string()),
            ..Default::default()
        };
        let topics = bounded(
            self.client.list_topics(),
            self.cfg.request_timeout,
            "list topics",
            at.clone(),
        )
        .await?;
        let t = topics
            .into_iter()
            .find(|t| t.name == topic)
            .ok_or(KafkaError::Broker {
                at,
                api: "Metadata",
                code: 3,
            })?;
        Ok(t.partitions.len() as i32)
    }

    /// Appends `records` to one partition; returns their offsets.
    pub async fn send(
        &self,
        topic: &str,
        partition: i32,
        records: Vec<OutRecord>,
    ) -> Result<Vec<i64>, KafkaError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let pc = self.partition_client(topic, partition).await?;
        let now = rskafka::chrono::Utc::now();
        let records = records
            .into_iter()
            .map(|r| Record {
                key: r.key,
                value: Some(r.value),
                headers: r.headers.into_iter().collect::<BTreeMap<_, _>>(),
                timestamp: now,
            })
            .collect();
        let at = Location::partition(None, topic, partition);
        bounded(
            pc.produce(records, Compression::NoCompression),
            self.cfg.request_timeout,
            "produce",
            at,
        )
        .await
    }

    async fn partition_client(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Arc<PartitionClient>, KafkaError> {
        let mut map = self.partitions.lock().await;
        if let Some(pc) = map.get(&(topic.to_string(), partition)) {
            return Ok(pc.clone());
        }
        let at = Location::partition(None, topic, partition);
        // Retry: a topic created a moment ago may not be known to every broker yet.
        let fut = self
            .client
            .partition_client(topic, partition, UnknownTopicHandling::Retry);
        let pc = Arc::new(
            bounded(
                fut,
                self.cfg.request_timeout,
                "producer partition lookup",
                at,
            )
            .await?,
        );
        map.insert((topic.to_string(), partition), pc.clone());
        Ok(pc)
    }
}

async fn bounded<T>(
    fut: impl Future<Output = Result<T, rskafka::client::error::Error>>,
    after: Duration,
    op: &'static str,
    at: Location,
) -> Result<T, KafkaError> {
    match tokio::time::timeout(after, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(KafkaError::Produce {
            at,
            source: Box::new(e),
        }),
        Err(_) => Err(KafkaError::Timeout { at, op, after }),
    }
}

/// Kafka's Java default partitioner for keyed records:
/// `toPositive(murmur2(key)) % partitions`.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    if partitions <= 0 {
        return 0;
    }
    (murmur2(key) & 0x7fff_ffff) % partitions
}

/// Kafka's `Utils.murmur2` (32-bit MurmurHash2, seed 0x9747b28c), bit for bit.
pub fn murmur2(data: &[u8]) -> i32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka_utils_test_vectors() {
        // From Kafka's UtilsTest.testMurmur2.
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973932308),
            (b"foobar", -790332482),
            (b"a-little-bit-long-string", -985981536),
            (b"a-little-bit-longer-string", -1486304829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58897971,
            ),
            (b"abc", 479470107),
        ];
        for (key, want) in cases {
            assert_eq!(murmur2(key), want, "{}", String::from_utf8_lossy(key));
        }
    }

    #[test]
    fn partition_for_key_is_positive_modulo() {
        // murmur2("21") = -973932308; & 0x7fffffff = 1173551340; % 10 = 0, % 7 = 1173551340 % 7.
        assert_eq!(partition_for_key(b"21", 10), 1_173_551_340 % 10);
        assert_eq!(partition_for_key(b"21", 7), 1_173_551_340 % 7);
        for n in 1..20 {
            let p = partition_for_key(b"foobar", n);
            assert!((0..n).contains(&p));
        }
        assert_eq!(partition_for_key(b"x", 0), 0);
    }
}
