//! The HTTP side: one reqwest client (rustls with the ring provider,
//! connection reuse), per-tenant headers prepared once, and a semaphore that
//! bounds requests in flight across every partition and route.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use tokio::sync::Semaphore;

use super::error::{KillbillError, Op};
use crate::config::KillbillSinkSettings;
use crate::sink::http_client::{self, ClientOptions, HttpClientError};
use crate::sink::secrets::{self, SecretError};

#[derive(Debug, thiserror::Error)]
pub enum ClientSetupError {
    #[error("kill bill sink: {0}")]
    Secret(#[from] SecretError),
    #[error("kill bill sink: {0}")]
    Client(#[from] HttpClientError),
    #[error("kill bill sink: {what} cannot be sent as an HTTP header value")]
    Header { what: String },
}

/// One tenant's headers: Basic auth, api key and secret, created-by/reason/comment.
#[derive(Debug)]
pub(super) struct Tenant {
    /// The tenantId as events carry it (shared with the lookup cache keys).
    pub id: Arc<str>,
    headers: HeaderMap,
}

#[derive(Debug)]
pub(super) struct KbClient {
    http: reqwest::Client,
    usages_url: reqwest::Url,
    subscriptions_url: reqwest::Url,
    tenants: HashMap<String, Tenant>,
    permits: Semaphore,
}

/// What Kill Bill answered to a POST: status and body, judged by `classify`.
pub(super) struct Answer {
    pub status: u16,
    pub body: Bytes,
}

impl KbClient {
    pub fn new(cfg: &KillbillSinkSettings) -> Result<KbClient, ClientSetupError> {
        let password = secrets::resolve("sinks.killbill.password", &cfg.password)?;
        let basic = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{password}", cfg.username));
        let mut common = HeaderMap::new();
        common.insert(
            AUTHORIZATION,
            sensitive(&format!("Basic {basic}"), "the Basic auth credentials")?,
        );
        common.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        common.insert(
            reqwest::header::ACCEPT,
            HeaderValue::from_static("application/json"),
        );
        common.insert(
            HeaderName::from_static("x-killbill-createdby"),
            plain(&cfg.created_by, "created_by")?,
        );
        if let Some(reason) = &cfg.reason {
            common.insert(
                HeaderName::from_static("x-killbill-reason"),
                plain(reason, "reason")?,
            );
        }
        if let Some(comment) = &cfg.comment {
            common.insert(
                HeaderName::from_static("x-killbill-comment"),
                plain(comment, "comment")?,
            );
        }
        let mut tenants = HashMap::new();
        for (tenant_id, t) in &cfg.tenants {
            let what = format!("sinks.killbill.tenants.\"{tenant_id}\".api_secret");
            let secret = secrets::resolve(&what, &t.api_secret)?;
            let mut headers = common.clone();
            headers.insert(
                HeaderName::from_static("x-killbill-apikey"),
                plain(&t.api_key, "api_key")?,
            );
            headers.insert(
                HeaderName::from_static("x-killbill-apisecret"),
                sensitive(&secret, &what)?,
            );
            tenants.insert(
                tenant_id.clone(),
                Tenant {
                    id: Arc::from(tenant_id.as_str()),
                    headers,
                },
            );
        }

        let http = http_client::build(ClientOptions {
            ca_file: cfg.ca_file.as_deref(),
            identity: cfg.cert_file.as_deref().zip(cfg.key_file.as_deref()),
            connect_timeout: cfg.connect_timeout,
            request_timeout: cfg.request_timeout,
            max_idle: cfg.max_in_flight,
        })?;
        Ok(KbClient {
            http,
            usages_url: endpoint(&cfg.url, "1.0/kb/usages"),
            subscriptions_url: endpoint(&cfg.url, "1.0/kb/subscriptions"),
            tenants,
            permits: Semaphore::new(cfg.max_in_flight),
        })
    }

    /// Every configured tenant, by tenantId.
    pub fn tenants_sorted(&self) -> Vec<(&str, &Tenant)> {
        let mut all: Vec<(&str, &Tenant)> = self
            .tenants
            .iter()
            .map(|(id, t)| (id.as_str(), t))
            .collect();
        all.sort_by_key(|(id, _)| *id);
        all
    }

    pub fn tenant(&self, tenant_id: &str) -> Result<&Tenant, KillbillError> {
        self.tenants
            .get(tenant_id)
            .ok_or_else(|| KillbillError::UnmappedTenant {
                tenant_id: tenant_id.to_string(),
            })
    }

    /// `GET /1.0/kb/subscriptions?externalKey=…` → the subscriptionId.
    pub async fn lookup(
        &self,
        tenant: &Tenant,
        external_key: &str,
    ) -> Result<String, KillbillError> {
        let mut url = self.subscriptions_url.clone();
        url.query_pairs_mut()
            .append_pair("externalKey", external_key);
        let answer = self
            .send(
                Op::Lookup,
                self.http.get(url).headers(tenant.headers.clone()),
            )
            .await?;
        if answer.status == 200 {
            super::response::subscription_id(&answer.body)
        } else {
            Err(super::response::status_error(
                Op::Lookup,
                answer.status,
                &answer.body,
            ))
        }
    }

    /// `POST /1.0/kb/usages`; the answer is judged by the caller.
    pub async fn post_usage(
        &self,
        tenant: &Tenant,
        body: Vec<u8>,
    ) -> Result<Answer, KillbillError> {
        let req = self
            .http
            .post(self.usages_url.clone())
            .headers(tenant.headers.clone())
            .body(body);
        self.send(Op::Post, req).await
    }

    async fn send(&self, op: Op, req: reqwest::RequestBuilder) -> Result<Answer, KillbillError> {
        // The semaphore is never closed; a closed one would mean shutdown.
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| KillbillError::Transport {
                op,
                message: "sink is shutting down".to_string(),
            })?;
        let resp = req
            .send()
            .await
            .map_err(|e| KillbillError::from_reqwest(op, &e))?;
        let status = resp.status().as_u16();
        let body = resp
            .bytes()
            .await
            .map_err(|e| KillbillError::from_reqwest(op, &e))?;
        Ok(Answer { status, body })
    }
}

/// `base` + `path`, keeping any path prefix of `base` (e.g. behind a proxy at `/killbill/`).
fn endpoint(base: &url::Url, path: &str) -> reqwest::Url {
    let mut url = base.clone();
    let prefix = base.path().trim_end_matches('/');
    url.set_path(&format!("{prefix}/{path}"));
    url.set_query(None);
    url
}

fn plain(value: &str, what: &str) -> Result<HeaderValue, ClientSetupError> {
    HeaderValue::from_str(value).map_err(|_| ClientSetupError::Header {
        what: what.to_string(),
    })
}

/// Marked sensitive so that it never shows in debug output.
fn sensitive(value: &str, what: &str) -> Result<HeaderValue, ClientSetupError> {
    let mut v = plain(value, what)?;
    v.set_sensitive(true);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_keep_a_path_prefix() {
        let base = url::Url::parse("https://kb.example:8443/killbill/").unwrap();
        assert_eq!(
            endpoint(&base, "1.0/kb/usages").as_str(),
            "https://kb.example:8443/killbill/1.0/kb/usages"
        );
        let base = url::Url::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            endpoint(&base, "1.0/kb/subscriptions").as_str(),
            "http://127.0.0.1:8080/1.0/kb/subscriptions"
        );
    }
}
