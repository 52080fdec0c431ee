//! tally: consume events from Kafka and deliver each exactly once.
//!
//! Data flow (see DESIGN.md): fetch → decode → dedupe lookup → sink.deliver
//! → ack → store.commit(ids + offset) in one sled transaction.

pub mod admin;
pub mod cli;
pub mod config;
pub mod dlq;
pub mod format;
pub mod kafka;
pub mod pipeline;
pub mod sink;
pub mod store;
pub mod tls;
