//! Kafka client: tally's own consume path (Metadata, ListOffsets, Fetch with
//! a RecordBatch v2 decoder) and a producer built on rskafka.
//!
//! The consume path is our own because rskafka 0.6 fails whole fetches on
//! null header values and control batches and cannot filter aborted
//! transactions; see DESIGN.md "Data flow".

mod compression;
mod error;
mod fetch;
mod record_batch;
mod transactions;
mod wire;

#[cfg(test)]
mod test_encoder;

pub use error::{ErrorKind, KafkaError, Location};
pub use fetch::Fetched;
pub use record_batch::{ConsumedRecord, RecordHeader};
