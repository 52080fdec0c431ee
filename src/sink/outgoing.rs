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
    pub usage: Option<UsageEvent>,
    pub received_at: DateTime<Utc>,
}
