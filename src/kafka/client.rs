//! Cluster client (metadata, leader cache) and per-partition consumers.
//!
//! Each `PartitionConsumer` owns its connection to the partition leader, so
//! partitions fetch concurrently without multiplexing one socket; errors
//! drop that connection and, when the leader may have moved, the cached
//! leader too. Callers own the backoff.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex as SyncMutex};
use std::time::Duration;

use tokio::sync::Mutex;

use super::conn::{BrokerConn, Connector, TcpConnector};
use super::error::{self, ErrorKind, KafkaError, Location};
use super::fetch::{self, FetchParams, Fetched, PartitionData, Seen, Undecided};
use super::list_offsets::{self, OffsetSpec};
use super::metadata::{self, ClusterMetadata};
use super::sasl::SaslCredentials;
use super::tls::{TlsConnector, TlsTransport};

#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// Bootstrap brokers, "host:port".
    pub brokers: Vec<String>,
    pub client_id: String,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// TLS to every broker (`[kafka.tls]`), loaded and ready.
    pub tls: Option<TlsTransport>,
    /// SASL login on every connection (`[kafka.sasl]`), secret resolved.
    pub sasl: Option<SaslCredentials>,
}

impl KafkaConfig {
    pub fn new(brokers: Vec<String>) -> Self {
        KafkaConfig {
            brokers,
            client_id: "tally".into(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            tls: None,
            sasl: None,
        }
    }
}

/// Largest batch we will widen a fetch for when one batch alone exceeds
/// the caller's max_bytes (brokers that do not return an oversized first batch).
pub const MAX_BATCH_FETCH: i32 = 64 * 1024 * 1024;

#[derive(Clone)]
pub struct ClusterClient {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: KafkaConfig,
    connector: Arc<dyn Connector>,
    /// Connection used for metadata requests; one request at a time.
    meta_conn: Mutex<Option<BrokerConn>>,
    cache: SyncMutex<Cache>,
}

#[derive(Default)]
struct Cache {
    brokers: BTreeMap<i32, String>,
    leaders: HashMap<(String, i32), i32>,
}

impl ClusterClient {
    /// TLS when `cfg.tls` says so, plain TCP otherwise.
    pub fn new(cfg: KafkaConfig) -> Self {
        let connector: Arc<dyn Connector> = match &cfg.tls {
            Some(t) => Arc::new(TlsConnector::new(t.clone())),
            None => Arc::new(TcpConnector),
        };
        Self::with_connector(cfg, connector)
    }

    /// Use another transport (e.g. TLS).
    pub fn with_connector(cfg: KafkaConfig, connector: Arc<dyn Connector>) -> Self {
        ClusterClient {
            inner: Arc::new(Inner {
                cfg,
                connector,
                meta_conn: Mutex::new(None),
                cache: SyncMutex::new(Cache::default()),
            }),
        }
    }

    pub fn config(&self) -> &KafkaConfig {
        &self.inner.cfg
    }

    /// Metadata for these topics (all topics if empty).
    pub async fn metadata(&self, topics: &[String]) -> Result<ClusterMetadata, KafkaError> {
        let mut slot = self.inner.meta_conn.lock().await;
        let mut conn = match slot.take() {
            Some(c) => c,
            None => self.connect_any().await?,
        };
        let at = Location::broker(conn.addr());
        let version = conn
            .versions
            .pick(metadata::API_KEY, metadata::VERSIONS, "Metadata", &at)?;
        let body = metadata::encode_request(version, topics);
        let resp = conn
            .request(
                metadata::API_KEY,
                version,
                &body,
                "Metadata",
                self.inner.cfg.request_timeout,
            )
            .await?;
        let md = metadata::parse_response(version, resp).map_err(|e| KafkaError::Protocol {
            at,
            reason: format!("Metadata: {}", e.0),
        })?;
        *slot = Some(conn);
        drop(slot);
        self.remember(&md);
        Ok(md)
    }

    pub fn partition_consumer(&self, topic: &str, partition: i32) -> PartitionConsumer {
        PartitionConsumer {
            client: self.clone(),
            topic: topic.to_string(),
            partition,
            conn: None,
            refresh_leader: false,
        }
    }

    /// Opens one connection (TLS handshake, SASL login) and drops it.
    pub async fn check_connect(&self) -> Result<(), KafkaError> {
        self.connect_any().await.map(drop)
    }

    /// Bootstrap brokers first (from a random one, to spread load), then
    /// brokers learnt from metadata.
    pub(super) async fn connect_any(&self) -> Result<BrokerConn, KafkaError> {
        let cfg = &self.inner.cfg;
        let mut candidates = cfg.brokers.clone();
        if !candidates.is_empty() {
            let start = fastrand::usize(..candidates.len());
            candidates.rotate_left(start);
        }
        if let Ok(cache) = self.inner.cache.lock() {
            for b in cache.brokers.values() {
                if !candidates.contains(b) {
                    candidates.push(b.clone());
                }
            }
        }
        let mut last = None;
        for addr in &candidates {
            match self.open(addr).await {
                Ok(c) => return Ok(c),
                Err(e) => {
                    tracing::debug!(broker = %addr, error = %e, "bootstrap broker unreachable");
                    last = Some(e);
                }
            }
        }
        Err(match last {
            Some(last) => KafkaError::NoBrokerReachable {
                tried: candidates.join(", "),
                last: Box::new(last),
            },
            None => KafkaError::Invalid("no Kafka brokers configured".into()),
        })
    }

    pub(super) async fn open(&self, addr: &str) -> Result<BrokerConn, KafkaError> {
        let cfg = &self.inner.cfg;
        BrokerConn::open(
            &*self.inner.connector,
            addr,
            &cfg.client_id,
            cfg.connect_timeout,
            cfg.request_timeout,
            cfg.sasl.as_ref(),
        )
        .await
    }

    fn remember(&self, md: &ClusterMetadata) {
        let Ok(mut cache) = self.inner.cache.lock() else {
            return;
        };
        for (id, addr) in &md.brokers {
            cache.brokers.insert(*id, addr.clone());
        }
        for (name, t) in &md.topics {
            if t.error.is_some() {
                continue;
            }
            for (p, pm) in &t.partitions {
                if pm.leader >= 0 {
                    cache.leaders.insert((name.clone(), *p), pm.leader);
                } else {
                    cache.leaders.remove(&(name.clone(), *p));
                }
            }
        }
    }

    fn cached_leader(&self, topic: &str, partition: i32) -> Option<String> {
        let cache = self.inner.cache.lock().ok()?;
        let id = cache.leaders.get(&(topic.to_string(), partition))?;
        cache.brokers.get(id).cloned()
    }

    fn forget_leader(&self, topic: &str, partition: i32) {
        if let Ok(mut cache) = self.inner.cache.lock() {
            cache.leaders.remove(&(topic.to_string(), partition));
        }
    }

    /// The leader's address, from cache unless `refresh`.
    async fn leader(
        &self,
        topic: &str,
        partition: i32,
        refresh: bool,
    ) -> Result<String, KafkaError> {
        if !refresh && let Some(addr) = self.cached_leader(topic, partition) {
            return Ok(addr);
        }
        let md = self.metadata(&[topic.to_string()]).await?;
        let at = Location::partition(None, topic, partition);
        let broker_err = |code| KafkaError::Broker {
            at: at.clone(),
            api: "Metadata",
            code,
        };
        // A topic missing from the answer or without the partition is what a
        // just-created topic looks like: transient UNKNOWN_TOPIC_OR_PARTITION.
        let t = md.topics.get(topic).ok_or_else(|| broker_err(3))?;
        if let Some(code) = t.error {
            return Err(broker_err(code));
        }
        let p = t.partitions.get(&partition).ok_or_else(|| broker_err(3))?;
        if p.leader < 0 {
            return Err(broker_err(p.error.unwrap_or(5)));
        }
        md.brokers
            .get(&p.leader)
            .cloned()
            .ok_or_else(|| broker_err(5))
    }
}

/// Consumes one partition from its leader, following it when it moves.
pub struct PartitionConsumer {
    client: ClusterClient,
    topic: String,
    partition: i32,
    conn: Option<BrokerConn>,
    refresh_leader: bool,
}

impl PartitionConsumer {
    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// Address of the leader we are connected to, if connected.
    pub fn broker(&self) -> Option<&str> {
        self.conn.as_ref().map(BrokerConn::addr)
    }

    /// Committed records from `offset` on (read_committed).
    pub async fn fetch(
        &mut self,
        offset: i64,
        max_bytes: i32,
        max_wait: Duration,
    ) -> Result<Fetched, KafkaError> {
        let mut max_bytes = max_bytes.clamp(1, MAX_BATCH_FETCH);
        loop {
            let data = self.fetch_raw(offset, max_bytes, max_wait).await?;
            let (fetched, seen) = self.assemble(offset, data.clone(), Undecided::Stop)?;
            if fetched.next_offset > offset {
                return Ok(fetched);
            }
            // No progress. Either the first batch alone is larger than
            // max_bytes, or the first batch is transactional and its marker
            // lies beyond this response: ask again with more room.
            let limit = if fetched.last_stable_offset >= 0 {
                fetched.last_stable_offset
            } else {
                fetched.high_watermark
            };
            let grow = match (
                seen.truncated.and_then(|t| t.declared_size),
                seen.undecided_at,
            ) {
                (Some(size), _) if size > max_bytes as usize => {
                    Some(size.min(i32::MAX as usize) as i32)
                }
                (_, Some(_)) if seen.end_offset < limit || seen.truncated.is_some() => {
                    Some(max_bytes.saturating_mul(2))
                }
                // Nothing there yet, or an open transaction: the caller polls again.
                _ => None,
            };
            let Some(want) = grow else { return Ok(fetched) };
            if max_bytes >= MAX_BATCH_FETCH {
                if seen.undecided_at.is_some() {
                    // A transaction bigger than we will buffer: decide it by
                    // the broker's aborted list, as the Java consumer does.
                    tracing::warn!(topic = %self.topic, partition = self.partition, offset,
                        "transaction marker beyond {MAX_BATCH_FETCH} bytes; trusting the broker's aborted-transactions list");
                    return Ok(self.assemble(offset, data, Undecided::TrustBroker)?.0);
                }
                return Err(KafkaError::Corrupt {
                    at: self.location(offset),
                    reason: format!("batch larger than the {MAX_BATCH_FETCH}-byte fetch limit"),
                });
            }
            max_bytes = want.clamp(max_bytes.saturating_add(1), MAX_BATCH_FETCH);
        }
    }

    fn assemble(
        &self,
        offset: i64,
        data: PartitionData,
        undecided: Undecided,
    ) -> Result<(Fetched, Seen), KafkaError> {
        fetch::assemble(offset, data, undecided).map_err(|e| KafkaError::Corrupt {
            at: Location::partition(self.broker(), &self.topic, self.partition)
                .with_offset(e.offset.unwrap_or(offset)),
            reason: e.reason,
        })
    }

    async fn fetch_raw(
        &mut self,
        offset: i64,
        max_bytes: i32,
        max_wait: Duration,
    ) -> Result<PartitionData, KafkaError> {
        let topic = self.topic.clone();
        let params = FetchParams {
            topic: &topic,
            partition: self.partition,
            offset,
            max_bytes,
            max_wait_ms: max_wait.as_millis().min(i32::MAX as u128) as i32,
        };
        let timeout = self.client.inner.cfg.request_timeout + max_wait;
        let versions = (fetch::MIN_VERSION, fetch::MAX_VERSION);
        let (conn, version, resp) = self
            .call(fetch::API_KEY, versions, "Fetch", offset, timeout, |v| {
                fetch::encode_request(v, &params)
            })
            .await?;
        let at =
            Location::partition(Some(conn.addr()), &self.topic, self.partition).with_offset(offset);
        let parsed =
            fetch::parse_response(version, resp, &self.topic, self.partition).map_err(|e| {
                KafkaError::Protocol {
                    at: at.clone(),
                    reason: format!("Fetch: {}", e.0),
                }
            })?;
        let code = if parsed.error_code != error::NONE {
            parsed.error_code
        } else {
            parsed.partition.as_ref().map_or(3, |p| p.error_code)
        };
        self.check(conn, at.clone(), "Fetch", code)?;
        parsed.partition.ok_or_else(|| KafkaError::Protocol {
            at,
            reason: "Fetch response lacks the partition".into(),
        })
    }

    /// An offset by spec, read_committed. For a timestamp past the last
    /// record Kafka answers -1; we return the latest offset instead, which is
    /// where a consumer starting "at that time" would begin.
    pub async fn list_offset(&mut self, at: OffsetSpec) -> Result<i64, KafkaError> {
        let off = self.list_offset_raw(at).await?;
        if off < 0 && matches!(at, OffsetSpec::Timestamp(_)) {
            return self.list_offset_raw(OffsetSpec::Latest).await;
        }
        Ok(off)
    }

    async fn list_offset_raw(&mut self, spec: OffsetSpec) -> Result<i64, KafkaError> {
        let timeout = self.client.inner.cfg.request_timeout;
        let (topic, partition) = (self.topic.clone(), self.partition);
        let (conn, version, resp) = self
            .call(
                list_offsets::API_KEY,
                list_offsets::VERSIONS,
                "ListOffsets",
                -1,
                timeout,
                |v| list_offsets::encode_request(v, &topic, partition, spec),
            )
            .await?;
        let at = Location::partition(Some(conn.addr()), &self.topic, self.partition);
        let found = list_offsets::parse_response(version, resp, &self.topic, self.partition)
            .map_err(|e| KafkaError::Protocol {
                at: at.clone(),
                reason: format!("ListOffsets: {}", e.0),
            })?;
        let (code, offset) = found.unwrap_or((3, -1));
        self.check(conn, at, "ListOffsets", code)?;
        Ok(offset)
    }

    /// Sends one request to the leader (connecting first if needed). The
    /// connection comes back to the caller, who hands it to `check`.
    async fn call(
        &mut self,
        api_key: i16,
        ours: (i16, i16),
        api: &'static str,
        offset: i64,
        timeout: Duration,
        body: impl FnOnce(i16) -> Vec<u8>,
    ) -> Result<(BrokerConn, i16, bytes::Bytes), KafkaError> {
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => {
                let addr = self
                    .client
                    .leader(&self.topic, self.partition, self.refresh_leader)
                    .await?;
                let c = self
                    .client
                    .open(&addr)
                    .await
                    .inspect_err(|_| self.lost_leader())?;
                self.refresh_leader = false;
                c
            }
        };
        let at = Location::partition(Some(conn.addr()), &self.topic, self.partition);
        let at = if offset >= 0 {
            at.with_offset(offset)
        } else {
            at
        };
        let version = conn.versions.pick(api_key, ours, api, &at)?;
        let body = body(version);
        match conn.request(api_key, version, &body, api, timeout).await {
            Ok(resp) => Ok((conn, version, resp)),
            Err(e) => {
                // The socket state is unknown: drop it; the leader may be gone too.
                self.lost_leader();
                Err(e)
            }
        }
    }

    /// Keeps the connection unless the error code says the leader moved or
    /// the broker is unwell.
    fn check(
        &mut self,
        conn: BrokerConn,
        at: Location,
        api: &'static str,
        code: i16,
    ) -> Result<(), KafkaError> {
        match code {
            error::NONE => {
                self.conn = Some(conn);
                Ok(())
            }
            error::OFFSET_OUT_OF_RANGE => {
                self.conn = Some(conn);
                Err(KafkaError::OffsetOutOfRange { at })
            }
            code => {
                if error::code_kind(code) == ErrorKind::Transient {
                    self.lost_leader();
                } else {
                    self.conn = Some(conn);
                }
                Err(KafkaError::Broker { at, api, code })
            }
        }
    }

    fn lost_leader(&mut self) {
        self.conn = None;
        self.refresh_leader = true;
        self.client.forget_leader(&self.topic, self.partition);
    }

    fn location(&self, offset: i64) -> Location {
        Location::partition(self.broker(), &self.topic, self.partition).with_offset(offset)
    }
}
