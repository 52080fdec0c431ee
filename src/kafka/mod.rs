//! Kafka client: tally's own consume path (Metadata, ListOffsets, Fetch with
//! a RecordBatch v2 decoder), group membership (`group`) and a producer
//! built on rskafka.
//!
//! The consume path is our own because rskafka 0.6 fails whole fetches on
//! null header values and control batches and cannot filter aborted
//! transactions; see DESIGN.md "Data flow".

mod client;
mod compression;
mod conn;
mod error;
mod fetch;
pub mod group;
mod list_offsets;
mod metadata;
mod produce;
mod record_batch;
mod response_buf;
mod sasl;
mod scram;
mod security;
mod tls;
mod transactions;
mod versions;
mod wire;

#[cfg(test)]
mod broker_tests;
#[cfg(test)]
mod test_encoder;

pub use client::{ClusterClient, KafkaConfig, MAX_BATCH_FETCH, PartitionConsumer};
pub use conn::{BoxStream, ConnectFuture, Connector, KafkaStream, TcpConnector};
pub use error::{ErrorKind, KafkaError, Location, error_name};
pub use fetch::Fetched;
pub use list_offsets::OffsetSpec;
pub use metadata::{ClusterMetadata, PartitionMetadata, TopicMetadata};
pub use produce::{OutRecord, Producer, murmur2, partition_for_key};
pub use record_batch::{ConsumedRecord, RecordHeader};
pub use sasl::SaslCredentials;
pub use security::{SecurityError, load_security};
pub use tls::{TlsConnector, TlsTransport};
