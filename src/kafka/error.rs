//! One error type for the Kafka module, classified once so the pipeline's
//! retry/halt policy does not have to know Kafka error codes.

use std::fmt;
use std::io;
use std::time::Duration;

/// How the caller should react to a [`KafkaError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Retry later (with backoff); the consumer has already dropped its
    /// connection and will re-resolve the leader on the next call.
    Transient,
    /// The requested offset is outside the log; the caller applies its reset policy.
    OffsetOutOfRange,
    /// Retrying will not help: configuration, auth, protocol or data problem.
    Fatal,
}

/// Where an error happened; every field that is known is printed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Location {
    pub broker: Option<String>,
    pub topic: Option<String>,
    pub partition: Option<i32>,
    pub offset: Option<i64>,
}

impl Location {
    pub fn broker(addr: &str) -> Self {
        Location {
            broker: Some(addr.to_string()),
            ..Default::default()
        }
    }
    pub fn partition(broker: Option<&str>, topic: &str, partition: i32) -> Self {
        Location {
            broker: broker.map(str::to_string),
            topic: Some(topic.to_string()),
            partition: Some(partition),
            offset: None,
        }
    }
    pub fn with_offset(mut self, offset: i64) -> Self {
        self.offset = Some(offset);
        self
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        if let Some(b) = &self.broker {
            write!(f, "broker {b}")?;
            sep = ", ";
        }
        if let Some(t) = &self.topic {
            write!(f, "{sep}topic {t}")?;
            sep = ", ";
        }
        if let Some(p) = self.partition {
            write!(f, "{sep}partition {p}")?;
            sep = ", ";
        }
        if let Some(o) = self.offset {
            write!(f, "{sep}offset {o}")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("connecting to {at}: {source}")]
    Connect { at: Location, source: io::Error },

    #[error("{op} ({at}): {source}")]
    Io {
        at: Location,
        op: &'static str,
        source: io::Error,
    },

    #[error("{op} ({at}) timed out after {after:?}")]
    Timeout {
        at: Location,
        op: &'static str,
        after: Duration,
    },

    #[error("{api} ({at}): broker error {code} {}", error_name(*.code))]
    Broker {
        at: Location,
        api: &'static str,
        code: i16,
    },

    #[error("offset out of range ({at})")]
    OffsetOutOfRange { at: Location },

    #[error(
        "{api} ({at}): no common version (we implement {ours_min}..={ours_max}, broker offers {theirs})"
    )]
    UnsupportedVersion {
        at: Location,
        api: &'static str,
        ours_min: i16,
        ours_max: i16,
        theirs: String,
    },

    /// A response we cannot parse: broker bug or incompatibility.
    #[error("malformed response ({at}): {reason}")]
    Protocol { at: Location, reason: String },

    /// Record data that fails validation (CRC, framing, compression, legacy magic).
    #[error("corrupt record data ({at}): {reason}")]
    Corrupt { at: Location, reason: String },

    #[error("no broker reachable (tried {tried}): {last}")]
    NoBrokerReachable {
        tried: String,
        last: Box<KafkaError>,
    },

    #[error("producer ({at}): {source}")]
    Produce {
        at: Location,
        source: Box<rskafka::client::error::Error>,
    },

    #[error("invalid request: {0}")]
    Invalid(String),

    /// The TLS handshake failed (certificate, CA, name, client certificate
    /// refused): configuration to fix, not an outage to wait out.
    #[error("TLS with {at}: {reason}")]
    Tls { at: Location, reason: String },

    /// SASL login failed; names the mechanism and the user, never the password.
    #[error("SASL {mechanism} login as user \"{user}\" at {at} failed: {reason}")]
    Sasl {
        at: Box<Location>,
        mechanism: &'static str,
        user: String,
        reason: String,
    },
}

impl KafkaError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            KafkaError::Connect { .. } | KafkaError::Io { .. } | KafkaError::Timeout { .. } => {
                ErrorKind::Transient
            }
            KafkaError::Broker { code, .. } => code_kind(*code),
            KafkaError::OffsetOutOfRange { .. } => ErrorKind::OffsetOutOfRange,
            // Every broker refusing our certificate or login is still that.
            KafkaError::NoBrokerReachable { last, .. } => match last.kind() {
                ErrorKind::Fatal => ErrorKind::Fatal,
                _ => ErrorKind::Transient,
            },
            KafkaError::Produce { source, .. } => rskafka_kind(source),
            KafkaError::UnsupportedVersion { .. }
            | KafkaError::Protocol { .. }
            | KafkaError::Corrupt { .. }
            | KafkaError::Invalid(_)
            | KafkaError::Tls { .. }
            | KafkaError::Sasl { .. } => ErrorKind::Fatal,
        }
    }

    pub fn is_retriable(&self) -> bool {
        self.kind() == ErrorKind::Transient
    }

    /// The Kafka error code, if the broker sent one.
    pub fn code(&self) -> Option<i16> {
        match self {
            KafkaError::Broker { code, .. } => Some(*code),
            KafkaError::OffsetOutOfRange { .. } => Some(OFFSET_OUT_OF_RANGE),
            _ => None,
        }
    }
}

pub const NONE: i16 = 0;
pub const OFFSET_OUT_OF_RANGE: i16 = 1;
pub const UNSUPPORTED_VERSION: i16 = 35;

/// Classification of broker error codes. Unknown codes are fatal: better to
/// halt and be looked at than to spin on something we do not understand.
pub fn code_kind(code: i16) -> ErrorKind {
    match code {
        OFFSET_OUT_OF_RANGE => ErrorKind::OffsetOutOfRange,
        // UNKNOWN_SERVER_ERROR is retried: billing data is never dropped for being late.
        -1 | 3 | 5 | 6 | 7 | 8 | 9 | 13 | 14 | 15 | 16 | 19 | 20 | 51 | 56 | 74 | 75 | 78 | 89
        | 100 => ErrorKind::Transient,
        _ => ErrorKind::Fatal,
    }
}

pub fn error_name(code: i16) -> &'static str {
    match code {
        -1 => "UNKNOWN_SERVER_ERROR",
        0 => "NONE",
        1 => "OFFSET_OUT_OF_RANGE",
        2 => "CORRUPT_MESSAGE",
        3 => "UNKNOWN_TOPIC_OR_PARTITION",
        4 => "INVALID_FETCH_SIZE",
        5 => "LEADER_NOT_AVAILABLE",
        6 => "NOT_LEADER_OR_FOLLOWER",
        7 => "REQUEST_TIMED_OUT",
        8 => "BROKER_NOT_AVAILABLE",
        9 => "REPLICA_NOT_AVAILABLE",
        10 => "MESSAGE_TOO_LARGE",
        13 => "NETWORK_EXCEPTION",
        14 => "COORDINATOR_LOAD_IN_PROGRESS",
        15 => "COORDINATOR_NOT_AVAILABLE",
        16 => "NOT_COORDINATOR",
        17 => "INVALID_TOPIC_EXCEPTION",
        19 => "NOT_ENOUGH_REPLICAS",
        20 => "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
        22 => "ILLEGAL_GENERATION",
        23 => "INCONSISTENT_GROUP_PROTOCOL",
        24 => "INVALID_GROUP_ID",
        25 => "UNKNOWN_MEMBER_ID",
        26 => "INVALID_SESSION_TIMEOUT",
        27 => "REBALANCE_IN_PROGRESS",
        28 => "INVALID_COMMIT_OFFSET_SIZE",
        29 => "TOPIC_AUTHORIZATION_FAILED",
        30 => "GROUP_AUTHORIZATION_FAILED",
        31 => "CLUSTER_AUTHORIZATION_FAILED",
        35 => "UNSUPPORTED_VERSION",
        51 => "CONCURRENT_TRANSACTIONS",
        56 => "KAFKA_STORAGE_ERROR",
        58 => "SASL_AUTHENTICATION_FAILED",
        74 => "FENCED_LEADER_EPOCH",
        75 => "UNKNOWN_LEADER_EPOCH",
        76 => "UNSUPPORTED_COMPRESSION_TYPE",
        78 => "OFFSET_NOT_AVAILABLE",
        79 => "MEMBER_ID_REQUIRED",
        81 => "GROUP_MAX_SIZE_REACHED",
        89 => "THROTTLING_QUOTA_EXCEEDED",
        100 => "UNKNOWN_TOPIC_ID",
        _ => "(unlisted code)",
    }
}

fn rskafka_kind(e: &rskafka::client::error::Error) -> ErrorKind {
    use rskafka::client::error::Error as E;
    match e {
        E::Connection(_) | E::Request(_) | E::RetryFailed(_) | E::Timeout => ErrorKind::Transient,
        E::ServerError { protocol_error, .. } => {
            use rskafka::client::error::ProtocolError as P;
            match protocol_error {
                P::UnknownServerError
                | P::UnknownTopicOrPartition
                | P::LeaderNotAvailable
                | P::NotLeaderOrFollower
                | P::RequestTimedOut
                | P::BrokerNotAvailable
                | P::ReplicaNotAvailable
                | P::NetworkException
                | P::NotEnoughReplicas
                | P::NotEnoughReplicasAfterAppend
                | P::KafkaStorageError
                | P::FencedLeaderEpoch
                | P::UnknownLeaderEpoch
                | P::ThrottlingQuotaExceeded => ErrorKind::Transient,
                _ => ErrorKind::Fatal,
            }
        }
        _ => ErrorKind::Fatal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let at = Location::partition(Some("b:9092"), "t", 3).with_offset(42);
        let e = KafkaError::Broker {
            at: at.clone(),
            api: "Fetch",
            code: 6,
        };
        assert_eq!(e.kind(), ErrorKind::Transient);
        assert!(e.is_retriable());
        let msg = e.to_string();
        assert!(msg.contains("b:9092") && msg.contains("topic t") && msg.contains("partition 3"));
        assert!(
            msg.contains("offset 42") && msg.contains("NOT_LEADER_OR_FOLLOWER"),
            "{msg}"
        );
        assert_eq!(
            KafkaError::OffsetOutOfRange { at: at.clone() }.kind(),
            ErrorKind::OffsetOutOfRange
        );
        assert_eq!(
            KafkaError::Broker {
                at,
                api: "Fetch",
                code: 58
            }
            .kind(),
            ErrorKind::Fatal
        );
    }
}
