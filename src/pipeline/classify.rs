//! The one place that decides what a failure means for a record.
//!
//! * **Transient** — the destination is briefly unavailable: pause, retry with
//!   capped exponential backoff and jitter, forever. Billing data is never
//!   dropped for being late.
//! * **Halt** — misconfiguration the operator must fix (credentials, TLS, a
//!   full disk): stop progress, retry slowly, never skip.
//! * **Permanent** — the record itself is wrong: dead-letter it with the
//!   reason and move on.

use crate::config::RejectPolicy;
use crate::format::DecodeError;
use crate::kafka::{ErrorKind as KafkaErrorKind, KafkaError};
use crate::sink::SinkError;
use crate::sink::amqp::AmqpError;
use crate::sink::http::HttpError;
use crate::sink::killbill::KillbillError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    Transient,
    Halt,
    Permanent,
}

impl FailureClass {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Transient => "transient",
            FailureClass::Halt => "halt",
            FailureClass::Permanent => "permanent",
        }
    }
}

pub fn classify_sink(e: &SinkError) -> FailureClass {
    match e {
        SinkError::Io {
            kind, raw_os_error, ..
        } => {
            // ENOSPC, EDQUOT, EROFS, EACCES, EPERM: nothing improves until someone acts.
            const HALT_ERRNOS: [i32; 5] = [28, 122, 30, 13, 1];
            if raw_os_error.is_some_and(|c| HALT_ERRNOS.contains(&c))
                || *kind == std::io::ErrorKind::PermissionDenied
            {
                FailureClass::Halt
            } else {
                FailureClass::Transient
            }
        }
        SinkError::Stopped | SinkError::NotSent => FailureClass::Transient,
        SinkError::Killbill(e) => classify_killbill(e),
        SinkError::Http(e) => classify_http(e),
        SinkError::Amqp(e) => classify_amqp(e),
    }
}

/// Whether a request failed because nothing answers at the endpoint
/// (connection refused, no route, name not resolved): every other request
/// to it would fail the same way, so a call stops sending (see
/// `sink::fan_out`). Timeouts are not: a slow endpoint may answer the next.
pub fn endpoint_unreachable(e: &SinkError) -> bool {
    matches!(
        e,
        SinkError::Http(HttpError::Connect { .. })
            | SinkError::Killbill(KillbillError::Connect { .. })
    )
}

fn classify_amqp(e: &AmqpError) -> FailureClass {
    match e {
        // Reconnect, redeclare, re-send the unconfirmed.
        AmqpError::Unavailable { .. } | AmqpError::ConfirmTimeout { .. } | AmqpError::HeldBack => {
            FailureClass::Transient
        }
        AmqpError::Refused { .. } | AmqpError::Unmapped { .. } => FailureClass::Halt,
        // The operator chose: wait for a queue / the broker, or dead-letter.
        AmqpError::Rejected { policy, .. } => match policy {
            RejectPolicy::Retry => FailureClass::Transient,
            RejectPolicy::DeadLetter => FailureClass::Permanent,
        },
    }
}

fn classify_http(e: &HttpError) -> FailureClass {
    match e {
        HttpError::Connect { .. } | HttpError::Timeout { .. } | HttpError::Transport { .. } => {
            FailureClass::Transient
        }
        // Certificates, CA, or a request we cannot form: configuration.
        HttpError::Tls { .. } | HttpError::Request { .. } => FailureClass::Halt,
        HttpError::Status { status, .. } => match *status {
            408 | 429 => FailureClass::Transient,
            500..=599 => FailureClass::Transient,
            401 | 403 | 407 => FailureClass::Halt,
            // The receiver refused this record (validation, conflict, …): dead-letter it.
            400..=499 => FailureClass::Permanent,
            // Redirects (not followed) and 1xx: never skip, never assume delivered.
            _ => FailureClass::Halt,
        },
    }
}

/// Kill Bill error code for "a usage record with this tracking ID already exists".
pub const KILLBILL_TRACKING_ID_EXISTS: i64 = 50000;

/// Whether Kill Bill has the usage record after this answer to `POST /1.0/kb/usages`.
/// 201 is a fresh record; 400 with code 50000 means an earlier send (e.g.
/// acked just before a crash, never committed) already recorded it — the
/// trackingId is the idempotency key, so that too is delivered.
pub fn killbill_usage_acknowledged(status: u16, code: Option<i64>) -> bool {
    status == 201 || (status == 400 && code == Some(KILLBILL_TRACKING_ID_EXISTS))
}

fn classify_killbill(e: &KillbillError) -> FailureClass {
    match e {
        // The record cannot be delivered as it is: dead-letter (replayable).
        KillbillError::NotUsage | KillbillError::UnmappedTenant { .. } => FailureClass::Permanent,
        KillbillError::Connect { .. }
        | KillbillError::Timeout { .. }
        | KillbillError::Transport { .. } => FailureClass::Transient,
        // Our own request could not be formed: configuration, not the record.
        KillbillError::Request { .. } => FailureClass::Halt,
        // A 200 that is not a subscription: `url` points at something else.
        KillbillError::BadAnswer { .. } => FailureClass::Halt,
        KillbillError::Status { status, code, .. } => match *status {
            401 | 403 | 407 => FailureClass::Halt,
            408 | 429 => FailureClass::Transient,
            500..=599 => FailureClass::Transient,
            // Kill Bill's own 404 (unknown subscription / external key) is about
            // the record; a 404 without its JSON error body is a wrong `url`,
            // and dead-lettering everything would be the worst answer to that.
            404 if code.is_some() => FailureClass::Permanent,
            404 => FailureClass::Halt,
            400..=499 => FailureClass::Permanent,
            // Redirects (not followed) and unexpected 1xx/2xx: never skip, never assume delivered.
            _ => FailureClass::Halt,
        },
    }
}

/// A Kafka failure the consume path cannot retry its way out of (TLS or
/// SASL refused, protocol mismatch) halts; everything else is transient
/// (the offset-out-of-range policy is applied before this is asked).
pub fn classify_kafka(e: &KafkaError) -> FailureClass {
    match e.kind() {
        KafkaErrorKind::Fatal => FailureClass::Halt,
        KafkaErrorKind::Transient | KafkaErrorKind::OffsetOutOfRange => FailureClass::Transient,
    }
}

/// A group coordinator answer: "this generation is over" (rebalance,
/// expelled, stale generation) only means join again; every other error is
/// classified like any Kafka error (e.g. INVALID_SESSION_TIMEOUT, a group
/// authorization failure or another client's protocol in the group: halt).
pub fn classify_group(e: &KafkaError) -> FailureClass {
    if e.code().is_some_and(crate::kafka::group::needs_rejoin) {
        FailureClass::Transient
    } else {
        classify_kafka(e)
    }
}

/// Whether a halting Kafka failure stops the whole daemon rather than one
/// partition: a refused TLS handshake or SASL login is the client's identity
/// or trust being wrong, so every connection will fail the same way, and an
/// operator has to change config or certificates. Other halts (a corrupt
/// batch, a protocol error on one partition) stop that partition only, so
/// the rest keep billing.
pub fn kafka_failure_stops_daemon(e: &KafkaError) -> bool {
    match e {
        KafkaError::Tls { .. } | KafkaError::Sasl { .. } => true,
        KafkaError::NoBrokerReachable { last, .. } => kafka_failure_stops_daemon(last),
        _ => false,
    }
}

/// A store write that failed: halt, and more than a sink halt — the daemon
/// stops (exit non-zero) instead of retrying. sled refuses every write after
/// a failed flush, so a retry cannot succeed in this process, and stopping
/// keeps the rule "nothing acknowledged that was not committed": the store
/// is where offsets live, so whatever was not recorded is fetched again on
/// the next start and absorbed by the sink's idempotency key.
pub fn classify_store(_: &crate::pipeline::committer::CommitFailed) -> FailureClass {
    FailureClass::Halt
}

/// A record that cannot be decoded will never decode: permanent.
pub fn classify_decode(_: &DecodeError) -> FailureClass {
    FailureClass::Permanent
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(kind: std::io::ErrorKind, raw: Option<i32>) -> SinkError {
        SinkError::Io {
            op: "write",
            path: "x".into(),
            kind,
            raw_os_error: raw,
            message: String::new(),
        }
    }

    fn kb(status: u16, code: Option<i64>) -> SinkError {
        SinkError::Killbill(KillbillError::Status {
            op: crate::sink::killbill::Op::Post,
            status,
            code,
            message: String::new(),
        })
    }

    #[test]
    fn killbill_outcomes() {
        assert!(killbill_usage_acknowledged(201, None));
        assert!(killbill_usage_acknowledged(400, Some(50000)));
        assert!(!killbill_usage_acknowledged(400, Some(4001)));
        assert!(!killbill_usage_acknowledged(200, None));
        assert!(!killbill_usage_acknowledged(500, Some(50000)));
        use FailureClass::*;
        for (status, code, class) in [
            (401, None, Halt),
            (403, Some(1), Halt),
            (404, Some(1083), Permanent),
            (404, None, Halt),
            (400, Some(4001), Permanent),
            (400, None, Permanent),
            (422, None, Permanent),
            (429, None, Transient),
            (408, None, Transient),
            (500, None, Transient),
            (503, Some(1), Transient),
            (302, None, Halt),
            (200, None, Halt),
        ] {
            assert_eq!(classify_sink(&kb(status, code)), class, "{status} {code:?}");
        }
        let unmapped = SinkError::Killbill(KillbillError::UnmappedTenant {
            tenant_id: "t".into(),
        });
        assert_eq!(classify_sink(&unmapped), Permanent);
        let down = SinkError::Killbill(KillbillError::Connect {
            op: crate::sink::killbill::Op::Lookup,
            message: "refused".into(),
        });
        assert_eq!(classify_sink(&down), Transient);
    }

    #[test]
    fn http_outcomes() {
        use FailureClass::*;
        let status = |s: u16| {
            SinkError::Http(HttpError::Status {
                status: s,
                body: String::new(),
            })
        };
        for (s, class) in [
            (400, Permanent),
            (404, Permanent),
            (409, Permanent),
            (422, Permanent),
            (401, Halt),
            (403, Halt),
            (407, Halt),
            (408, Transient),
            (429, Transient),
            (500, Transient),
            (502, Transient),
            (503, Transient),
            (301, Halt),
            (101, Halt),
        ] {
            assert_eq!(classify_sink(&status(s)), class, "{s}");
        }
        let e = |e: HttpError| classify_sink(&SinkError::Http(e));
        let m = || "x".to_string();
        assert_eq!(e(HttpError::Connect { message: m() }), Transient);
        assert_eq!(e(HttpError::Timeout { message: m() }), Transient);
        assert_eq!(e(HttpError::Tls { message: m() }), Halt);
    }

    #[test]
    fn group_codes_rejoin_and_misconfiguration_halts() {
        let broker = |code| KafkaError::Broker {
            at: crate::kafka::Location::broker("b:1"),
            api: "JoinGroup",
            code,
        };
        for rejoin in [22, 25, 27, 79] {
            assert_eq!(classify_group(&broker(rejoin)), FailureClass::Transient);
        }
        for coordinator_moved in [14, 15, 16] {
            assert_eq!(
                classify_group(&broker(coordinator_moved)),
                FailureClass::Transient
            );
        }
        // INCONSISTENT_GROUP_PROTOCOL, INVALID_SESSION_TIMEOUT, GROUP_AUTHORIZATION_FAILED
        for halt in [23, 26, 30] {
            assert_eq!(classify_group(&broker(halt)), FailureClass::Halt);
        }
    }

    #[test]
    fn disk_full_halts_and_interruptions_retry() {
        assert_eq!(
            classify_sink(&io(std::io::ErrorKind::Other, Some(28))),
            FailureClass::Halt
        );
        assert_eq!(
            classify_sink(&io(std::io::ErrorKind::PermissionDenied, Some(13))),
            FailureClass::Halt
        );
        assert_eq!(
            classify_sink(&io(std::io::ErrorKind::Interrupted, Some(4))),
            FailureClass::Transient
        );
    }

    #[test]
    fn tls_and_sasl_refusals_stop_the_daemon_other_kafka_halts_one_partition() {
        use crate::kafka::Location;
        let at = || Location::broker("b:9093");
        let tls = KafkaError::Tls {
            at: at(),
            reason: "certificate expired".into(),
        };
        assert_eq!(classify_kafka(&tls), FailureClass::Halt);
        assert!(kafka_failure_stops_daemon(&tls));
        let behind = KafkaError::NoBrokerReachable {
            tried: "b:9093".into(),
            last: Box::new(tls),
        };
        assert!(kafka_failure_stops_daemon(&behind));
        let sasl = KafkaError::Sasl {
            at: Box::new(at()),
            mechanism: "SCRAM-SHA-512",
            user: "u".into(),
            reason: "unknown-user".into(),
        };
        assert!(kafka_failure_stops_daemon(&sasl));
        let corrupt = KafkaError::Corrupt {
            at: Location::partition(Some("b:9093"), "t", 3),
            reason: "CRC mismatch".into(),
        };
        assert_eq!(classify_kafka(&corrupt), FailureClass::Halt);
        assert!(!kafka_failure_stops_daemon(&corrupt));
    }
}
