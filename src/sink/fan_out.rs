//! One request per record, concurrently, for the HTTP-speaking sinks.
//!
//! At most `max_in_flight` of a call's requests exist at once (futures and
//! bodies). Once one finds the endpoint unreachable, the requests not yet
//! started are not sent at all (`SinkError::NotSent`, transient): against a
//! down endpoint a chunk of thousands of records costs about one window of
//! refused connects, not one per record.

use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::StreamExt;
use futures_util::future::BoxFuture;

use super::{Outgoing, SinkError};
use crate::pipeline::classify::endpoint_unreachable;

/// Results in `batch` order.
pub(super) async fn each<'a, F>(
    batch: &'a [&'a Outgoing],
    max_in_flight: usize,
    one: F,
) -> Vec<Result<(), SinkError>>
where
    F: Fn(&'a Outgoing) -> BoxFuture<'a, Result<(), SinkError>> + Sync,
{
    let unreachable = AtomicBool::new(false);
    let (unreachable, one) = (&unreachable, &one);
    // Boxed and collected first: a lazily mapped stream trips a
    // higher-ranked `Send` error in the spawned worker; an unpolled call
    // allocates nothing but its state, and checks the flag when first polled.
    let calls: Vec<BoxFuture<'_, Result<(), SinkError>>> = batch
        .iter()
        .map(|o| -> BoxFuture<'_, Result<(), SinkError>> {
            Box::pin(async move {
                if unreachable.load(Ordering::Relaxed) {
                    return Err(SinkError::NotSent);
                }
                let result = one(o).await;
                if let Err(e) = &result
                    && endpoint_unreachable(e)
                {
                    unreachable.store(true, Ordering::Relaxed);
                }
                result
            })
        })
        .collect();
    futures_util::stream::iter(calls)
        .buffered(max_in_flight.max(1))
        .collect()
        .await
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::sink::http::HttpError;

    fn outgoing(offset: i64) -> Outgoing {
        Outgoing {
            route: "r".into(),
            topic: "t".into(),
            partition: 0,
            offset,
            key: None,
            dedupe_key: None,
            event: bytes::Bytes::from_static(b"{}"),
            usage: None,
            received_at: chrono::Utc::now(),
        }
    }

    #[tokio::test]
    async fn stops_starting_requests_once_the_endpoint_is_unreachable() {
        let records: Vec<Outgoing> = (0..1000).map(outgoing).collect();
        let batch: Vec<&Outgoing> = records.iter().collect();
        let started = AtomicUsize::new(0);
        let results = each(&batch, 8, |o| {
            let started = &started;
            Box::pin(async move {
                started.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
                if o.offset < 3 {
                    Ok(())
                } else {
                    Err(SinkError::Http(HttpError::Connect {
                        message: "refused".into(),
                    }))
                }
            })
        })
        .await;
        assert_eq!(results.len(), 1000);
        assert!(results[..3].iter().all(|r| r.is_ok()));
        // The window already started when the first refusal came back, no more.
        let sent = started.load(Ordering::Relaxed);
        assert!(sent <= 3 + 8, "{sent} requests started");
        let not_sent = results
            .iter()
            .filter(|r| matches!(r, Err(SinkError::NotSent)))
            .count();
        assert_eq!(not_sent, 1000 - sent);
    }

    #[tokio::test]
    async fn other_failures_do_not_stop_the_call() {
        let records: Vec<Outgoing> = (0..100).map(outgoing).collect();
        let batch: Vec<&Outgoing> = records.iter().collect();
        let results = each(&batch, 4, |o| {
            Box::pin(async move {
                if o.offset % 2 == 0 {
                    Err(SinkError::Http(HttpError::Status {
                        status: 503,
                        body: String::new(),
                    }))
                } else {
                    Ok(())
                }
            })
        })
        .await;
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 50);
        assert!(!results.iter().any(|r| matches!(r, Err(SinkError::NotSent))));
    }
}
