//! Sink `killbill`: each usage event becomes one `POST /1.0/kb/usages`,
//! after resolving `subscriptionExternalKey → subscriptionId` (cached).
//!
//! Every record of a `deliver` call has a distinct dedupe key (the worker
//! guarantees it), so they are sent concurrently; the client's semaphore
//! bounds requests across all partitions. `trackingId` is Kill Bill's
//! idempotency key: a re-send after a crash between ack and commit is
//! answered "already exists", which `classify` counts as delivered.

mod body;
mod client;
mod error;
mod lookup;
mod probe;
mod response;

use std::sync::Arc;

pub use crate::sink::secrets::SecretError;
pub use client::ClientSetupError;
pub use error::{KillbillError, Op};

use super::{Outgoing, SinkError, fan_out};
use crate::config::KillbillSinkSettings;
use crate::format::UsageEvent;
use crate::pipeline::classify::killbill_usage_acknowledged;
use client::{KbClient, Tenant};
use lookup::{Flights, LookupCache};

#[derive(Debug)]
pub struct KillbillSink {
    client: KbClient,
    cache: LookupCache,
    lookups: Flights<Result<Arc<str>, KillbillError>>,
    /// Requests of one chunk alive at once (see `deliver`).
    max_in_flight: usize,
}

impl KillbillSink {
    /// Reads the secrets and prepares the client; no request is made yet.
    pub fn new(cfg: &KillbillSinkSettings) -> Result<KillbillSink, ClientSetupError> {
        Ok(KillbillSink {
            client: KbClient::new(cfg)?,
            cache: LookupCache::new(cfg.lookup_cache_size, cfg.lookup_cache_ttl),
            lookups: Flights::new(),
            max_in_flight: cfg.max_in_flight,
        })
    }

    /// Results in order; see `fan_out` for the window and for what a
    /// down endpoint costs.
    pub async fn deliver(&self, batch: &[&Outgoing]) -> Vec<Result<(), SinkError>> {
        fan_out::each(batch, self.max_in_flight, |o| {
            Box::pin(async move { self.deliver_one(o).await.map_err(SinkError::Killbill) })
        })
        .await
    }

    async fn deliver_one(&self, o: &Outgoing) -> Result<(), KillbillError> {
        let usage = o.usage.as_ref().ok_or(KillbillError::NotUsage)?;
        let tenant = self.client.tenant(&usage.tenant_id)?;
        let (subscription_id, cached) = self.subscription_id(tenant, usage).await?;
        match self.post(tenant, &subscription_id, usage).await {
            // A cached id Kill Bill no longer knows: look it up once more
            // rather than dead-letter a record that may be valid.
            Err(KillbillError::Status { status: 404, .. }) if cached => {
                self.cache
                    .invalidate(&tenant.id, &usage.subscription_external_key);
                let (fresh, _) = self.subscription_id(tenant, usage).await?;
                self.post(tenant, &fresh, usage).await
            }
            other => other,
        }
    }

    /// The subscription id, and whether it came from the cache.
    async fn subscription_id(
        &self,
        tenant: &Tenant,
        usage: &UsageEvent,
    ) -> Result<(Arc<str>, bool), KillbillError> {
        let key = &usage.subscription_external_key;
        if let Some(id) = self.cache.get(&tenant.id, key) {
            return Ok((id, true));
        }
        let id = self
            .lookups
            .run(&tenant.id, key, || async {
                let id: Arc<str> = Arc::from(self.client.lookup(tenant, key).await?);
                self.cache.insert(&tenant.id, key, Arc::clone(&id));
                Ok(id)
            })
            .await?;
        Ok((id, false))
    }

    async fn post(
        &self,
        tenant: &Tenant,
        subscription_id: &str,
        usage: &UsageEvent,
    ) -> Result<(), KillbillError> {
        let body = body::usage_body(subscription_id, usage);
        let answer = self.client.post_usage(tenant, body).await?;
        let parsed = response::error_body(&answer.body);
        if killbill_usage_acknowledged(answer.status, parsed.code) {
            return Ok(());
        }
        Err(KillbillError::Status {
            op: Op::Post,
            status: answer.status,
            code: parsed.code,
            message: parsed.message,
        })
    }
}
