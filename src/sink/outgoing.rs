use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::format::UsageEvent;

/// A record on its way to a sink, with everything a sink may need.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub route: Arc<str>,
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Bytes>,
    /// Also the sink's idempotency key where it has one.
    pub dedupe_key: Option<String>,
    /// The record's JSON value, validated.
    pub event: Bytes,
    /// Boxed: only Kill Bill routes fill it, and inline its 96 bytes would
    /// be copied with every record of every route (the worker moves a
    /// decoded record into its chunk's pendings).
    pub usage: Option<Box<UsageEvent>>,
    pub received_at: DateTime<Utc>,
}
